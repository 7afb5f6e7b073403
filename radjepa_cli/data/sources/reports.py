"""Free-text radiology report sections (MIMIC-CXR .txt reports): FINDINGS and IMPRESSION."""
from __future__ import annotations

import re

# A section header: a line starting with capitals and a colon, e.g. "FINDINGS:", "IMPRESSION:", "PA AND LATERAL:".
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z &/()-]{2,}):", re.MULTILINE)
_ALIASES = {"FINDINGS": "findings", "FINDING": "findings", "IMPRESSION": "impression", "IMPRESSIONS": "impression",
            "CONCLUSION": "impression"}


def clean(text: str) -> str:
    return " ".join(text.replace("___", "").split()) if text else ""


def report_sections(text: str) -> dict[str, str]:
    """{'findings': ..., 'impression': ...} (empty strings when absent). Section text runs to the next header."""
    out = {"findings": "", "impression": ""}
    headers = list(_HEADER.finditer(text))
    for h, nxt in zip(headers, headers[1:] + [None]):
        name = _ALIASES.get(h.group(1).strip())
        if name and not out[name]:
            out[name] = clean(text[h.end(): nxt.start() if nxt else len(text)])
    return out
