"""DICOM networking: SCP, study assembly, SCU export."""
