"""Manufacturer tag styles and synthetic Chinese patient identities for phantom DICOM.

Real township scanners differ in how they store CT numbers (signed with intercept
-1024, unsigned with -1024, unsigned with -8192), in kernel names, description wording
and private blocks (PS3.5 7.8); the phantoms reproduce those differences so the DICOM
node and series selection see what they will meet in the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np


@dataclass(frozen=True, slots=True)
class VendorStyle:
    """How one manufacturer writes a CT/CTA series and a radiograph."""

    key: str
    manufacturer: str
    ct_model: str
    dr_model: str
    signed: bool  # PixelRepresentation 1 (two's complement) vs 0
    intercept: float  # RescaleIntercept of CT images
    kernels: dict[str, str]  # vendor-neutral kernel family -> ConvolutionKernel
    software: str
    private_group: int
    private_creator: str
    image_type_extra: tuple[str, ...]
    chinese_descriptions: bool

    def ct_description(self, part: str, thickness: float, kernel: str) -> str:
        """SeriesDescription in this vendor's wording (UIH sites tend to use Chinese)."""
        if self.chinese_descriptions:
            names = {"CHEST": "胸部平扫", "HEADNECK": "头颈CTA"}
            window = "肺窗" if kernel in ("lung", "sharp") else "纵隔窗"
            return f"{names.get(part, part)} {thickness:g}mm {window}"
        if self.key == "SIEMENS":
            region = "Thorax" if part == "CHEST" else "CTA_HeadNeck"
            return f"{region} {thickness:.1f} {self.kernels[kernel]}"
        if self.key == "GE":
            return f"{thickness:g}mm {'Lung' if kernel in ('lung', 'sharp') else 'Std'} {part}"
        return f"{part.title()} {thickness:g}mm {self.kernels[kernel]}"


STYLES: dict[str, VendorStyle] = {
    "GE": VendorStyle(
        "GE",
        "GE MEDICAL SYSTEMS",
        "Optima CT660",
        "Definium 6000",
        True,
        -1024.0,
        {"soft": "SOFT", "standard": "STANDARD", "lung": "LUNG", "sharp": "BONEPLUS"},
        "gmp_vct.62",
        0x0009,
        "GEMS_IDEN_01",
        (),
        False,
    ),
    "SIEMENS": VendorStyle(
        "SIEMENS",
        "SIEMENS",
        "SOMATOM Definition AS",
        "Ysio Max",
        False,
        -1024.0,
        {"soft": "B30f", "standard": "B40f", "lung": "B70f", "sharp": "B80f"},
        "syngo CT VA48A",
        0x0019,
        "SIEMENS CT VA1 DUMMY",
        ("CT_SOM5 SPI",),
        False,
    ),
    "PHILIPS": VendorStyle(
        "PHILIPS",
        "Philips",
        "Ingenuity CT",
        "DigitalDiagnost",
        False,
        -1024.0,
        {"soft": "A", "standard": "B", "lung": "L", "sharp": "YC"},
        "4.1.7",
        0x01F1,
        "ELSCINT1",
        (),
        False,
    ),
    "UIH": VendorStyle(
        "UIH",
        "UIH",
        "uCT 760",
        "uDR 780i",
        False,
        -8192.0,
        {"soft": "B_SOFT_B", "standard": "B_SOFT_C", "lung": "L_SHARP_C", "sharp": "B_SHARP_C"},
        "R001.2.3",
        0x0065,
        "Uih",
        (),
        True,
    ),
}

_FAMILY = [
    ("王", "WANG"),
    ("李", "LI"),
    ("张", "ZHANG"),
    ("刘", "LIU"),
    ("陈", "CHEN"),
    ("杨", "YANG"),
    ("黄", "HUANG"),
    ("赵", "ZHAO"),
    ("吴", "WU"),
    ("周", "ZHOU"),
    ("徐", "XU"),
    ("孙", "SUN"),
    ("马", "MA"),
    ("朱", "ZHU"),
    ("胡", "HU"),
    ("郭", "GUO"),
    ("何", "HE"),
    ("罗", "LUO"),
    ("欧阳", "OUYANG"),
    ("司马", "SIMA"),
]
_GIVEN = [
    ("秀英", "XIU YING"),
    ("桂兰", "GUI LAN"),
    ("建国", "JIAN GUO"),
    ("伟", "WEI"),
    ("芳", "FANG"),
    ("娜", "NA"),
    ("敏", "MIN"),
    ("静", "JING"),
    ("强", "QIANG"),
    ("磊", "LEI"),
    ("军", "JUN"),
    ("洋", "YANG"),
    ("艳", "YAN"),
    ("淑珍", "SHU ZHEN"),
    ("德明", "DE MING"),
    ("玉梅", "YU MEI"),
    ("国华", "GUO HUA"),
    ("翠花", "CUI HUA"),
    ("䶮", "YAN"),
]  # one character outside GBK: only GB18030 / UTF-8 hold it


@dataclass(frozen=True, slots=True)
class Patient:
    """A synthetic patient: name as DICOM PN (alphabetic=ideographic groups, PS3.5 6.2)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str


def synthetic_patient(seed: int, charset: str, study_day: date) -> Patient:
    """Deterministic Chinese patient; the GBK charset never gets the GB18030-only character."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A7]))
    fam, fam_py = _FAMILY[int(rng.integers(len(_FAMILY)))]
    pool = _GIVEN if charset != "GBK" else _GIVEN[:-1]
    giv, giv_py = pool[int(rng.integers(len(pool)))]
    name = f"{fam}^{giv}"
    if rng.uniform() < 0.5:
        name = f"{fam_py}^{giv_py}={name}"
    age_years = int(rng.integers(35, 86))
    born = study_day - timedelta(days=age_years * 365 + int(rng.integers(0, 365)))
    return Patient(
        name=name,
        patient_id=f"P{int(rng.integers(10**7, 10**8))}",
        birth_date=born.strftime("%Y%m%d"),
        sex=str(rng.choice(["M", "F"])),
        age=f"{age_years:03d}Y",
    )


#: DICOM defined terms (PS3.3 C.12.1.1.2) accepted for Specific Character Set.
CHARSETS = ("GB18030", "ISO_IR 192", "GBK")
