"""The run report's timeline: a labelled bar per task on its worker's row, and the run's deadline."""

import matplotlib.pyplot as plt
import pytest

from arc_submit import report


def journal(*tasks):
    """Journal events for (worker, task id, start, end, final event) tuples, in time order."""
    events = []
    for worker, task_id, t0, t1, final in tasks:
        events.append({"t": t0, "worker": worker, "event": "start", "task_id": task_id})
        events.append({"t": t1, "worker": worker, "event": final, "task_id": task_id})
    return sorted(events, key=lambda e: e["t"])


def labels(fig):
    return {t.get_text(): t for t in fig.axes[0].texts}


def test_each_task_bar_carries_its_id_and_the_deadline_is_a_labelled_line(tmp_path):
    t = 1_000_000.0
    events = journal(("worker-0", "0d3d703e", t, t + 40, "done"), ("worker-1", "136b0064", t + 1, t + 30, "done"),
                     ("worker-0", "13e47133", t + 41, t + 90, "timeout"))
    fig = report.timeline_figure(events, deadline_at=t + 150)
    try:
        ax = fig.axes[0]
        texts = labels(fig)
        assert {"0d3d703e", "136b0064", "13e47133"} <= set(texts)
        # Each label sits on its own bar: the bar's middle, on its worker's row.
        assert texts["13e47133"].get_position() == pytest.approx((41 + 49 / 2, 0))
        assert texts["136b0064"].get_position() == pytest.approx((1 + 29 / 2, 1))
        assert all(texts[i].get_rotation() == 0 for i in ("0d3d703e", "136b0064", "13e47133"))  # wide bars
        deadline_lines = [line for line in ax.lines if list(line.get_xdata()) == [150, 150]]
        assert len(deadline_lines) == 1 and deadline_lines[0].get_linestyle() == "--"
        assert texts["deadline"].xy[0] == pytest.approx(150)  # the label points at the line
        assert ax.get_xlim()[1] >= 150  # the line is inside the picture, not clipped away
        assert [tick.get_text() for tick in ax.get_yticklabels()] == ["worker-0", "worker-1"]
    finally:
        plt.close(fig)
    assert report.timeline_png(events, tmp_path / "timeline.png", deadline_at=t + 150).stat().st_size > 0


def test_narrow_bars_get_upright_labels_and_slivers_none():
    t = 1_000_000.0
    # Over an hour's axis, a 2-minute task is a few dozen pixels wide: too narrow for the id written level.
    events = journal(("worker-0", "aaaaaaaa", t, t + 3000, "done"), ("worker-0", "bbbbbbbb", t + 3000, t + 3100,
                                                                     "done"),
                     ("worker-0", "cccccccc", t + 3100, t + 3101, "error"))
    fig = report.timeline_figure(events, deadline_at=t + 3600)
    try:
        texts = labels(fig)
        assert texts["aaaaaaaa"].get_rotation() == 0
        assert texts["bbbbbbbb"].get_rotation() == 90
        assert "cccccccc" not in texts  # one second of an hour: a sliver with no room for text
    finally:
        plt.close(fig)


def test_a_deadline_before_the_last_task_ended_and_no_deadline_at_all():
    t = 1_000_000.0
    events = journal(("worker-0", "0d3d703e", t, t + 100, "killed"))
    fig = report.timeline_figure(events, deadline_at=t + 60)
    try:
        assert fig.axes[0].get_xlim()[1] >= 100  # the overrun shows past the line
        assert any(list(line.get_xdata()) == [60, 60] for line in fig.axes[0].lines)
    finally:
        plt.close(fig)
    fig = report.timeline_figure(events)
    try:
        assert not fig.axes[0].lines and "deadline" not in labels(fig)
    finally:
        plt.close(fig)
    assert report.timeline_figure([], deadline_at=t) is None


def test_pictures_of_solved_tasks_come_first(tmp_path):
    from arc_submit.submission import ScoreReport, TaskScore

    (tmp_path / "tasks").mkdir()
    for name in ("0934a4d8", "3618c87e", "136b0064", "0d3d703e"):
        (tmp_path / "tasks" / f"{name}.png").write_bytes(b"png")
    score = ScoreReport(0.5, (TaskScore("0934a4d8", 0, 1), TaskScore("3618c87e", 1, 1), TaskScore("136b0064", 0, 1),
                              TaskScore("0d3d703e", 1, 1)))
    assert [p.stem for p in report.pictures_to_show(tmp_path, score)] == ["0d3d703e", "3618c87e", "0934a4d8",
                                                                          "136b0064"]
    assert [p.stem for p in report.pictures_to_show(tmp_path, None)] == ["0934a4d8", "0d3d703e", "136b0064",
                                                                         "3618c87e"]
