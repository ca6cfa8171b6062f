"""Patient data (PHI) in mail leaving the practice: validated identifiers, diagnoses and
patient context, with a confidence level. See docs/outbound.md."""
from __future__ import annotations

from mailguard.analyzers.phi.analyzer import PhiAnalyzer, PhiReport, assess

__all__ = ["PhiAnalyzer", "PhiReport", "assess"]
