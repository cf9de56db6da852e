import pytest

from countyread.routing import CT_NODULE, CTA, DR_NODULE, SeriesHeader, pipelines_for

SC = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (SeriesHeader("CT", CT, "Lung 1.25mm", "CHEST"), (CT_NODULE,)),
        (SeriesHeader("CT", CT, "CTA Head Neck 0.625", "NECK"), (CTA,)),
        (SeriesHeader("CT", CT, "头颈CTA", None), (CTA,)),
        (SeriesHeader("CT", CT, "胸部平扫", None), (CT_NODULE,)),
        (SeriesHeader("DX", DX, "PA", "CHEST"), (DR_NODULE,)),
        (SeriesHeader("CR", None, None, None), (DR_NODULE,)),
        (SeriesHeader("OT", SC, "Chest PA", None), (DR_NODULE,)),
        (SeriesHeader("OT", SC, "Dose Report", None, "CHEST CT"), ()),
        (SeriesHeader("OT", SC, "剂量报告", None, "胸部CT"), ()),
        (SeriesHeader("SR", "1.2.840.10008.5.1.4.1.1.88.22", None, None), ()),
    ],
)
def test_pipelines_for(header: SeriesHeader, expected: tuple[str, ...]) -> None:
    assert pipelines_for(header) == expected
