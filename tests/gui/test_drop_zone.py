"""DropZone: real drag-and-drop events carrying file URLs, and the "Add task…" dialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QFileDialog
from pytestqt.qtbot import QtBot

from poolnet_desktop.gui.drop_zone import DropZone, task_in
from poolnet_desktop.runtime.client.task_files import load_task


def make_zone(qtbot: QtBot) -> DropZone:
    zone = DropZone()
    qtbot.addWidget(zone)
    zone.resize(600, 240)
    zone.show()
    qtbot.waitExposed(zone)
    return zone


def drag_enter(pos: QPoint, mime: QMimeData) -> QDragEnterEvent:
    """PySide6 6.12 takes a QPointF (and deprecates the QPoint form); 6.11 only a QPoint."""
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    try:
        return QDragEnterEvent(QPointF(pos), *args)
    except TypeError:
        return QDragEnterEvent(pos, *args)


def drop(zone: DropZone, urls: list[QUrl]) -> bool:
    """Deliver a drag-enter then a drop, as a file manager's drag would; returns whether the
    zone accepted the drag."""
    mime = QMimeData()
    mime.setUrls(urls)
    centre = QPoint(zone.width() // 2, zone.height() // 2)
    enter = drag_enter(centre, mime)
    QApplication.sendEvent(zone, enter)
    if not enter.isAccepted():
        return False
    event = QDropEvent(
        QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(zone, event)
    return event.isAccepted()


def files(tmp_path: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("name = 'x'\ncommand = ['true']\n")
        paths.append(path)
    return paths


def test_dropping_a_manifest_emits_it(qtbot: QtBot, tmp_path: Path) -> None:
    zone = make_zone(qtbot)
    [manifest] = files(tmp_path, "sweep.pool.toml")
    with qtbot.waitSignal(zone.task_files_dropped) as dropped:
        assert drop(zone, [QUrl.fromLocalFile(str(manifest))])
    assert dropped.args == [[manifest]]
    assert not zone.message_label.isVisible()


def test_dropping_a_text_file_explains_what_a_task_is(qtbot: QtBot, tmp_path: Path) -> None:
    zone = make_zone(qtbot)
    [notes] = files(tmp_path, "notes.txt")
    with qtbot.assertNotEmitted(zone.task_files_dropped):
        assert drop(zone, [QUrl.fromLocalFile(str(notes))])
    assert zone.message_label.isVisible()
    assert zone.message_label.text() == (
        "notes.txt is not a task: drop a .pool.toml manifest, a script, or a folder holding one"
    )


def test_scripts_and_a_folder_holding_one_manifest(qtbot: QtBot, tmp_path: Path) -> None:
    zone = make_zone(qtbot)
    scripts = files(tmp_path, "a.py", "b.sh", "c.BAT", "d.ps1")
    [inner] = files(tmp_path, "job/render.pool.toml", "job/input.dat")[:1]
    urls = [QUrl.fromLocalFile(str(p)) for p in [*scripts, tmp_path / "job"]]
    with qtbot.waitSignal(zone.task_files_dropped) as dropped:
        drop(zone, urls)
    assert dropped.args == [[*scripts, inner]]


def test_mixed_drop_takes_the_tasks_and_names_the_rest(qtbot: QtBot, tmp_path: Path) -> None:
    zone = make_zone(qtbot)
    good, bad, worse = files(tmp_path, "run.py", "photo.jpg", "data.csv")
    with qtbot.waitSignal(zone.task_files_dropped) as dropped:
        drop(zone, [QUrl.fromLocalFile(str(p)) for p in (good, bad, worse)])
    assert dropped.args == [[good]]
    assert zone.message_label.text().startswith("photo.jpg is not a task")
    assert zone.message_label.text().endswith("(and 1 more not taken)")


def test_folders_without_exactly_one_manifest_are_refused(tmp_path: Path) -> None:
    files(tmp_path, "empty/readme.md", "many/a.pool.toml", "many/b.pool.toml")
    assert task_in(tmp_path / "empty") == "empty: holds no .pool.toml manifest"
    assert task_in(tmp_path / "many") == (
        "many: holds 2 manifests (a.pool.toml, b.pool.toml): choose the one to run"
    )
    assert task_in(tmp_path / "missing.py") == "missing.py was not found"


def test_remote_urls_and_plain_text_drags(qtbot: QtBot) -> None:
    zone = make_zone(qtbot)
    with qtbot.assertNotEmitted(zone.task_files_dropped):
        drop(zone, [QUrl("https://example.com/job.pool.toml")])
    assert "is not a file on this computer" in zone.message_label.text()

    # A drag of plain text (no URLs) is not accepted at all.
    mime = QMimeData()
    mime.setText("hello")
    enter = drag_enter(QPoint(5, 5), mime)
    QApplication.sendEvent(zone, enter)
    assert not enter.isAccepted()


def test_add_task_button_opens_a_dialog_whose_choice_is_emitted(
    qtbot: QtBot, tmp_path: Path
) -> None:
    zone = make_zone(qtbot)
    [script] = files(tmp_path, "train.py")
    qtbot.mouseClick(zone.add_button, Qt.MouseButton.LeftButton)
    dialog = zone.file_dialog
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()
    dialog.setDirectory(str(tmp_path))
    dialog.selectFile(str(script))
    with qtbot.waitSignal(zone.task_files_dropped) as chosen:
        dialog.accept()
    assert chosen.args == [[script]]


def test_a_folder_the_drop_zone_takes_is_one_the_loader_takes(tmp_path: Path) -> None:
    """Job.POOL.TOML used to be taken by the drop zone and refused by the loader."""
    files(tmp_path, "job/Job.POOL.TOML")
    (tmp_path / "job" / "Job.POOL.TOML").write_text('command = ["true"]\n')
    found = task_in(tmp_path / "job")
    assert found == tmp_path / "job" / "Job.POOL.TOML"
    assert load_task(tmp_path / "job").spec.name == "Job"
    assert load_task(found).spec.command == ("true",)
