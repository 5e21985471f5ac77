"""songtrace.report: the HTML report a person reads (layer 13: it reads every lower package's artifacts).

    report = build_report(["runs/attribute/abc", "runs/compare/def"], "report.html", home="songtrace-data")

One page per call: for each attribution run, each query with a player, waveform and spectrogram,
its top-k training tracks with players, per-artist credit and the score distribution (seed 002
Fig. 1 style), and, for a `songtrace localise` run, a heatmap of query time x top sources with each
window playable; a `songtrace compare` run adds Figs. 1-2, a `songtrace selfinfluence` run Table 1,
a `songtrace optout-eval` run the opt-out figures. New artifact kinds plug in through
`sections.register_section` (see that module).
"""

from songtrace.report.render import Report, build_report
from songtrace.report.sections import SECTION_KINDS, ReportContext, SectionKind, register_section

__all__ = ["SECTION_KINDS", "Report", "ReportContext", "SectionKind", "build_report", "register_section"]
