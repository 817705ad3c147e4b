"""JUnit XML for CI dashboards: one test case per result row; failures carry the gate's detail."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from rocbench.core.results import BAD_STATUSES, UNSUPPORTED


def text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def write_junit(path: Path, runs: list[tuple[str, pd.DataFrame]]) -> None:
    suites = ET.Element("testsuites", name="rocbench")
    for suite_name, frame in runs:
        failures = int(frame["status"].isin(("fail",)).sum()) if not frame.empty else 0
        errors = int(frame["status"].isin(("fault", "timeout")).sum()) if not frame.empty else 0
        skipped = int((frame["status"] == UNSUPPORTED).sum()) if not frame.empty else 0
        node = ET.SubElement(suites, "testsuite", name=suite_name, tests=str(len(frame)), failures=str(failures),
                             errors=str(errors), skipped=str(skipped))
        for _, row in frame.iterrows():
            seconds = (row.get("graph_us_median") or 0) * 1e-6
            case = ET.SubElement(node, "testcase", classname=f"rocbench.{suite_name}.{row['backend']}",
                                 name=text(row["case"]), time=f"{0.0 if math.isnan(seconds) else seconds:.9f}")
            props = ET.SubElement(case, "properties")
            for key in ("path", "max_abs_err", "cosine", "deterministic", "kernel_us_median", "graph_us_median",
                        "kernels_per_call", "algbw_kernel_GBps", "algbw_graph_GBps",
                        *[c for c in frame.columns if c.startswith("speedup")]):
                if text(row.get(key)):
                    ET.SubElement(props, "property", name=key, value=text(row.get(key)))
            status, detail = text(row["status"]), text(row.get("detail"))
            if status == "fail":
                ET.SubElement(case, "failure", message=detail[:500], type="gate").text = detail
            elif status in BAD_STATUSES:
                ET.SubElement(case, "error", message=detail[:500], type=status).text = detail
            elif status == UNSUPPORTED:
                ET.SubElement(case, "skipped", message=detail[:500])
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    tmp = Path(str(path) + ".tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
