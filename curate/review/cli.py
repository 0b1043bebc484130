"""`curate review`: the grid server, the decision export and the contact sheet (thin over curate.review.session)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from curate.cli import StageGroup
from curate.review.session import SORTS
from curate.core.workdir import REVIEW_STATUSES, Workdir

_WORKDIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _load_index(workdir: Workdir):
    from curate.review.session import load_index

    return load_index(workdir)


def _log_files(wd: Workdir) -> list[Path]:
    """The decision log and the files SQLite keeps beside it."""
    return [wd.review_db, wd.review_db.with_name("review.sqlite-wal"), wd.review_db.with_name("review.sqlite-shm")]


def _refuse_clobbering(out: Path, wd: Workdir, inputs: list[Path]) -> None:
    """Refuse an --out that is one of the files a review command reads (one line, exit 2)."""
    from curate.core.paths import refuse_output_among_inputs

    refuse_output_among_inputs(out, inputs=[*inputs, *_log_files(wd)], option="--out")


@click.group("review", cls=StageGroup, context_settings={"max_content_width": 100})
def review_group() -> None:
    """Review crops by hand: a browser grid, an export of the decisions, a contact sheet.

    Decisions go to WORKDIR/review.sqlite (every decision a new row, undo too); `curate pack`
    leaves out crops whose latest decision is 'rejected'. Nothing is ever deleted from disk.
    export and sheet need only read access to the workdir (a read-only copy will do); an
    --out that is one of the files they read is refused. A full or read-only disk is one
    line naming the path (exit 1), and leaves no partial file.

    \b
    Examples:
      curate review grid work                       # then open the printed URL
      curate review rank work                       # rank the crops by what you rejected so far
      curate review export work --format csv --out decisions.csv
      curate review sheet work --status rejected --out rejected.png
    """


@review_group.command("grid")
@click.argument("workdir", type=_WORKDIR)
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8765, show_default=True, metavar="N",
              help="Port to listen on (0 = any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address to listen on. Anything but loopback exposes your decisions to the network.")
@click.option("--per-page", type=click.IntRange(1, 1000), default=200, show_default=True, metavar="N",
              help="Crops per page (the page can change it).")
@click.option("--rank/--no-rank", default=True, show_default=True,
              help="Rank in the background: the unusual crops first as soon as their features are measured, "
                   "the reject model once your decisions support one.")
def grid_command(workdir: Path, port: int, host: str, per_page: int, rank: bool) -> None:
    """Serve the review grid for WORKDIR on a local web page and print its URL.

    Crops are shown most doubtful first: by the reject model once it exists (it learns from your
    decisions in the background, after 10 rejected and 10 accepted, and the header estimates how
    many bad crops are left); before it, the score stage's rejections and then the crops most
    unlike the typical one (measured in the background when the grid starts: the image features
    take ~7 ms a crop once, then are kept in the workdir); until then by lowest person score. Keys: arrows move, x rejects
    (again: back to pending), a accepts every pending crop on the page, u undoes, n/p change
    page, ? lists the keys. Each decision is committed before the page shows it; one the log
    cannot take (disk full) is refused with the reason and can be made again once there is room.
    WORKDIR must be writable (the log is WORKDIR/review.sqlite; thumbnails are cached in
    WORKDIR/.thumbs when there is room).

    \b
    Examples:
      curate review grid work
      curate review grid work --port 0              # any free port
      curate review grid work --no-rank             # no background ranking (a slow disk, a quick look)
      curate review grid work --host 0.0.0.0        # reachable from other machines (warns)
    """
    from curate.core.web import allowed_hosts, bind_socket, is_loopback, page_url, serve
    from curate.review.session import ReviewSession
    from curate.review.app import create_app

    wd = Workdir(workdir)
    index = _load_index(wd)
    loopback = is_loopback(host)
    session = ReviewSession(wd, index)  # first: a log that cannot be written fails before the port is taken
    try:
        sock = bind_socket(host, port)
    except BaseException:
        session.close()
        raise
    app = create_app(session, allowed_hosts=allowed_hosts(host), per_page=per_page)
    if not loopback:
        click.echo(f"review: warning: listening on {host}, not loopback: anyone who can reach this machine "
                   "can see the crops and change decisions", err=True)
    c = session.counts()
    dup = f"; {index.duplicates:,} duplicate crop ids ignored" if index.duplicates else ""
    click.echo(f"review: {c['total']:,} crops ({c['pending']:,} pending, {c['accepted']:,} accepted, "
               f"{c['rejected']:,} rejected{dup})")
    click.echo(f"review: open {page_url(host, sock)}   (Ctrl+C to stop)", nl=True)
    sys.stdout.flush()
    from curate.review.rank import BackgroundRanker

    ranker = BackgroundRanker(session).start(now=True) if rank else None  # measures now, trains if the log supports it
    try:
        serve(app, sock)
    finally:
        if ranker is not None:
            ranker.stop()
        c = session.counts()
        session.close()
        click.echo(f"review: {c['total']:,} crops: {c['accepted']:,} accepted, {c['rejected']:,} rejected, "
                   f"{c['pending']:,} pending -> {wd.review_db}")


@review_group.command("rank")
@click.argument("workdir", type=_WORKDIR)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes for the image features of crops not seen before  [default: one per core]")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Where illustration2vec is installed (its embedding joins the features)  "
                   "[default: $CURATE_MODELS or ~/.cache/curate/models]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def rank_command(workdir: Path, workers: int | None, models_dir: Path | None, progress: bool) -> None:
    """Train the reject model on WORKDIR's review decisions and rank every crop by p_reject.

    Every latest decision in review.sqlite counts (grid, batch or import): rejected crops are the
    positives, accepted ones the negatives. With at least 10 of each, a calibrated logistic
    regression on each crop's features (the crop and score tables' numbers, the face found again in
    the crop, colour histograms and edge directions of the image, and illustration2vec's embedding
    when it is installed) predicts for every crop the probability that you would reject it.
    Before there are enough decisions, and beside the model, every crop is also measured for how
    unusual it is against the workdir's typical crop (no decision needed): the grid then shows the
    score stage's rejections and the most unusual crops first, so the first decisions span the
    kinds of bad crop. Writes WORKDIR/review.rank.parquet (crop_id, p_reject, unusual) and
    review.rank.json (held-out AUC, the estimate of bad crops left among the unreviewed, with a 90%
    interval); with a model the grid shows the likely-bad crops first. Image features are kept in review.features.parquet: a rerun computes
    only new crops. The grid retrains by itself as you decide; this command is for scripts.

    \b
    Examples:
      curate review rank work
      curate review rank work && curate review export work --all --status pending --out todo.csv
    """
    from curate.review.rank import summary_line, train_and_rank, write_ranking

    wd = Workdir(workdir)
    if not wd.crops_table.exists():
        raise click.UsageError(f"{wd.crops_table} does not exist; give the workdir `curate crop` wrote")
    ranking = train_and_rank(wd, workers=workers, progress=progress, models_root=models_dir)
    write_ranking(wd, ranking)
    click.echo(summary_line(ranking, wd))


@review_group.command("export")
@click.argument("workdir", type=_WORKDIR)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="Output format.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write here (atomically)  [default: standard output]")
@click.option("--history", is_flag=True, help="Every decision row (undos included), not only each crop's latest.")
@click.option("--status", type=click.Choice(REVIEW_STATUSES), default=None, help="Only rows with this status.")
@click.option("--all", "every_crop", is_flag=True,
              help="Every crop of the crops table: never-decided crops too, as pending (not with --history).")
def export_command(workdir: Path, fmt: str, out: Path | None, history: bool, status: str | None,
                   every_crop: bool) -> None:
    """Write the review decisions of WORKDIR as CSV or JSON.

    One row per decided crop (its latest decision: crop_id, status, decided_at, origin, number of
    decisions, post_id, file, p_reject), or with --history every row of the log (seq, crop_id,
    status, decided_at, origin, post_id, file, p_reject). Crops never decided are pending and
    listed only with --all. p_reject is the reject model's probability that the reviewer would
    reject the crop (`curate review rank`), empty before the first ranking.

    \b
    Examples:
      curate review export work --format csv --out decisions.csv
      curate review export work --format json --status rejected
      curate review export work --all --status pending --out unreviewed.csv
      curate review export work --history --format json --out history.json
    """
    if every_crop and history:
        raise click.UsageError("--all lists each crop once; --history lists every decision row: choose one")
    from curate.core.atomic import write_bytes
    from curate.core.errors import environment_failure
    from curate.review.session import export_rows

    wd = Workdir(workdir)
    if out is not None:
        _refuse_clobbering(out, wd, [wd.crops_table])
    rows = export_rows(wd, history=history, status=status, every_crop=every_crop)
    if fmt == "json":
        text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    else:
        fields = (["seq"] if history else []) + ["crop_id", "status", "decided_at", "origin"] + \
                 ([] if history else ["decisions"]) + ["post_id", "file", "p_reject"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if out is None:
        try:
            click.echo(text, nl=False)  # echo flushes: a full disk under a redirect fails here
        except OSError as e:
            raise environment_failure(e, "standard output") from None
    else:
        write_bytes(out, text.encode())
    what = "decision rows" if history else "crops" if every_crop else "decided crops"
    click.echo(f"review export: {len(rows):,} {what} -> {out or 'stdout'}", err=out is None)


@review_group.command("sheet")
@click.argument("workdir", type=_WORKDIR)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="SHEET.png",
              help="The contact sheet to write (PNG).")
@click.option("--status", type=click.Choice(REVIEW_STATUSES), default="rejected", show_default=True,
              help="Show crops whose current status is this.")
@click.option("--reason", default=None, metavar="LABEL",
              help="Only crops with this score label (a score reject reason, 'kept' or 'unscored').")
@click.option("--sort", type=click.Choice([k for k in SORTS if k != "reject"]), default="score", show_default=True, help="Order of the tiles.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="At most this many crops.")
@click.option("--columns", type=click.IntRange(1, 200), default=20, show_default=True, metavar="N",
              help="Tiles per row.")
@click.option("--tile-width", type=click.IntRange(16, 256), default=64, show_default=True, metavar="PX",
              help="Tile width in pixels (height is twice that).")
def sheet_command(workdir: Path, out: Path, status: str, reason: str | None, sort: str, limit: int,
                  columns: int, tile_width: int) -> None:
    """Write a contact sheet (PNG) of the crops with a given review status.

    \b
    Examples:
      curate review sheet work --status rejected --out rejected.png
      curate review sheet work --status pending --reason low_person --limit 200 --out doubtful.png
    """
    from curate.core.atomic import atomic_path
    from curate.review.session import ThumbnailCache, contact_sheet, rows_with_status, status_array

    wd = Workdir(workdir)
    _refuse_clobbering(out, wd, [wd.crops_table, wd.scores_table, wd.crops_dir, wd.root / ".thumbs"])
    index = _load_index(wd)
    if reason is not None and reason not in index.label_names:
        raise click.BadParameter(f"{reason!r} is not a score label here; use one of {', '.join(index.label_names)}",
                                 param_hint="--reason")
    rows = rows_with_status(index, status_array(index, wd), status, reason, sort)
    shown = rows[:limit]
    if not shown:
        click.echo(f"review sheet: no crop is {status}; nothing written")
        return
    sheet, problems = contact_sheet(ThumbnailCache(wd, index), shown, columns=columns, tile_width=tile_width)
    with atomic_path(out) as tmp:
        sheet.save(tmp, "PNG")
    bad = "".join(f", {n} {why}" for why, n in problems.items())
    click.echo(f"review sheet: {len(shown):,} of {len(rows):,} {status} crops{bad} -> {out} "
               f"({sheet.width}x{sheet.height})")
