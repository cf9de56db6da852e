"""Result objects (SR, SEG, SC, KOS, extra series) built from a signed review."""

from dicom_node.results.builder import ResultObject, ResultSet, build_results, register_series
from dicom_node.results.common import Family

__all__ = ["Family", "ResultObject", "ResultSet", "build_results", "register_series"]
