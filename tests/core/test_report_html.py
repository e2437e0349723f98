import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from visec.report.html import HtmlReport  # noqa: E402


def test_report_is_self_contained_and_escapes_text(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    report = (HtmlReport("demo <report>").heading("Results").text("a < b & c")
              .table(pd.DataFrame({"method": ["x"], "auc": [0.91234]}), caption="board").figure(fig, "roc"))
    html = report.write(tmp_path / "r.html").read_text()
    assert "<title>demo &lt;report&gt;</title>" in html and "a &lt; b &amp; c" in html
    assert "0.9123" in html and html.count("data:image/png;base64,") == 1
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
