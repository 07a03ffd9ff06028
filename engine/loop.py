"""The training loop: iterate, and after each iteration do what the schedule says falls due (a log record, an FID
point, samples, a checkpoint, a signal's stop); roll back or stop on divergence; then write the final outputs.
Its clock, IntervalTimer, counts training time only."""
import signal
import sys
import time
from contextlib import contextmanager

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .images import save_fid_curve, save_loss_curve
from .metrics.evaluate import FIDTracker, evaluate_generator
from .outputs import fixed_latents, save_checkpoint, write_samples, write_summary
from .resume import load_resume_state
from .runlog import DiscardLog, RunLog
from .schedule import Schedule
from .session import run_iteration
from .stopping import TrainingDiverged, TrainingFailed, TrainingInterrupted, describe_os_error
from .tensorboard import TensorBoardLog


def train_loop(session, out, start, resumed, signals, references, run_dir=None):
    """Train from iteration ``start`` to the end, then finish the run (final checkpoint, samples, FID, summary).
    run_dir: the locked engine.rundir.RunDir of ``out`` (rank 0's), watched so a run whose folder is taken stops."""
    loop = TrainLoop(session, out, start, resumed, signals, references, run_dir=run_dir)
    try:
        with loop:
            loop.run(session.cfg.iterations)
        return loop.finish()
    except OSError as exc:
        loop.record_failure(exc)
        raise


class TrainLoop:
    """One run's loop: ``run`` iterates and does what its Schedule says falls due (a log record, an FID point,
    samples, a checkpoint, a signal's stop); ``finish`` writes the final outputs.

    Between two log records the host only queues steps and reads nothing back from the device: the log record is
    the one place the clock is read (one device sync and two host reads), and side work is entered only on the
    iterations it is due. ``bench.train_bench`` times ``run`` itself, so its figures are the user's."""

    def __init__(self, session, out, start, resumed, signals, references, progress_file=None, run_dir=None):
        cfg, world = session.cfg, session.world
        self.session, self.out, self.references, self.run_dir = session, out, references, run_dir
        self.main = world.is_main  # under torchrun, rank 0 alone writes the log, samples, checkpoints and summary
        self.iteration = start
        self.require_run_folder()
        self.tb = TensorBoardLog(out / "tensorboard") if cfg.tensorboard and self.main else None
        self.log = RunLog(out / "log.jsonl", resume_iteration=start if resumed else None) if self.main \
            else DiscardLog()
        if resumed and self.main:
            print(session.resume_message, file=sys.stderr)
        if self.main:
            cfg.write_json(out / "config.json")  # `ganforge train --config out/config.json` repeats this run
        self.z_fixed, self.labels_fixed = fixed_latents(cfg, session.state.G, session.device)
        self.iteration = self.logged_at = start
        self.checkpointed_at = start if resumed else None  # a resumed run's checkpoint at ``start`` exists
        # A resumed run carries on its history's figures: the clock, the FID curve and its best point.
        carried = session.history if resumed else {}
        self.timer = IntervalTimer(session.device, carried.get("train_seconds", 0.0), carried.get("train_images", 0))
        self.tracker = FIDTracker(cfg, references, session.device, world) if cfg.fid_every else None
        self.carried_fid = carried.get("fid_tracker")  # kept for later checkpoints even while FID is not tracked
        if self.tracker is not None:
            self.tracker.restore(self.carried_fid)
        if cfg.on_nan == "rollback" and not resumed:
            self.save_checkpoint()  # something to roll back to before the first periodic checkpoint
        self.bar = tqdm(total=cfg.iterations, initial=start, disable=not (cfg.progress and self.main), desc="train",
                        unit="it", dynamic_ncols=True, file=progress_file)
        self.schedule = Schedule(cfg, world, signals, writes_samples=self.main, tracks_fid=self.tracker is not None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        self.log.close()
        return False

    def run(self, until):
        """Train up to iteration ``until``."""
        cfg = self.session.cfg
        while self.iteration < until:
            run_iteration(self.session, self.iteration)
            self.iteration += 1
            self.timer.add_images(cfg.batch_size)
            self.bar.update(1)
            due = self.schedule.after(self.iteration)
            if due.log and not self.on_log():
                continue  # rolled back: the loop goes on from the restored iteration
            if due.side_work:
                with self.timer.side_work():
                    self.on_side_work(due)

    def on_log(self):
        """One log record: the interval's mean statistics and images/s. False when the run rolled back."""
        self.require_run_folder()
        record = {"iteration": self.iteration, **self.session.state.read_and_reset_stats(), **self.timer.lap()}
        stream = self.session.stream
        if stream is not None:  # how long the loop waited for the disk: a large share means the run is input-bound
            waited = stream.read_and_reset_wait()
            record["input_wait_seconds"] = round(waited, 3)
            interval = self.timer.interval_seconds
            record["input_wait_share"] = round(waited / interval, 3) if interval > 0 else None
        self.log.append(record)
        if self.tb is not None:
            self.tb.scalars(record)
        self.bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}",
                             img_s=f"{record['images_per_sec']:.0f}")
        return self.check_finite(record)

    def on_side_work(self, due):
        """The side work ``due`` names, in this order: an FID point, a sample grid, a checkpoint, the stop on a
        signal. A divergence found before the checkpoint rolls the run back instead (or stops it)."""
        i = self.iteration
        # a sample grid alone falls due on rank 0 only: no agreement between the ranks then
        self.require_run_folder(agree=due.fid or due.checkpoint or due.stop is not None)
        if due.fid and self.session.world.from_main(self.tracker.due(i, self.timer.seconds)):  # rank 0's clock
            track_fid(self.session, self.out, self.log, self.tb, self.tracker, i, self.timer.side_work_began)
        if due.samples:
            write_samples(self.session, self.z_fixed, self.labels_fixed, self.out / f"samples_{i:06d}.png", self.tb, i)
        if due.checkpoint:
            if not self.check_finite(None):  # never write a non-finite checkpoint
                return  # rolled back: the loop goes on from the restored iteration
            self.save_checkpoint()
        if due.stop is not None:
            name = signal.Signals(due.stop).name
            self.write_summary({"status": "interrupted", "signal": name})
            raise TrainingInterrupted(f"stopped by {name} at iteration {i}; checkpoint written; "
                                      f"continue with --resume {self.out}", due.stop)

    def check_finite(self, record):
        """The one divergence path: when a loss or weight went non-finite since the last log record, stop (summary
        written, TrainingDiverged raised) or roll back (returns False; the loop continues from the restored
        iteration). True when all is finite."""
        bad_at = self.session.state.first_nonfinite_iteration(self.logged_at)
        if bad_at is None:
            self.logged_at = self.iteration if record is not None else self.logged_at
            return True
        try:
            self.iteration = self.logged_at = handle_divergence(self.session, self.out, self.log, bad_at, record)
        except TrainingDiverged as diverged:
            self.write_summary({"status": "diverged", "diverged_at": diverged.iteration})
            raise
        self.bar.reset(total=self.session.cfg.iterations)
        self.bar.update(self.iteration)
        return False

    def save_checkpoint(self):
        save_checkpoint(self.session, self.out, self.iteration, self.history())
        self.checkpointed_at = self.iteration

    def history(self):
        """The run's figures so far, which a checkpoint carries so that a resume continues them: training seconds
        and images (train_seconds and images_per_sec count the whole history) and the FID tracking."""
        seconds, images = self.timer.totals()
        fid = self.tracker.state() if self.tracker is not None else self.carried_fid
        return {"train_seconds": seconds, "train_images": images, **({"fid_tracker": fid} if fid else {})}

    def write_summary(self, fields):
        return write_summary(self.session, self.out, self.timer, self.iteration, fields)

    def require_run_folder(self, agree=True):
        """Stop (TrainingFailed) when the run folder or its lock was taken from this run: removed, moved or
        replaced. Nothing more is written then, so the folder is not re-created and another run's is not touched.
        Checked before each write point; rank 0 sees the folder, and with ``agree`` every rank (which must all
        call it then) stops alike."""
        taken = self.run_dir.taken_away() if self.run_dir is not None else None
        if agree:
            taken = self.session.world.from_main(taken)
        if taken:
            raise TrainingFailed(f"{taken}; stopped at iteration {self.iteration} without writing anything more; "
                                 f"restore the folder and continue with --resume {self.out}")

    def record_failure(self, exc):
        """summary.json with status "failed" and the cause, if the folder still takes a write."""
        if self.run_dir is not None and self.run_dir.taken_away():
            return  # a write would re-create the folder, or land in another run's
        try:
            self.write_summary({"status": "failed", "error": describe_os_error(exc)})
        except OSError:
            pass  # the disk that failed the run may fail this too; the one-line message still says why

    def stop_if_signalled(self):
        """A signal during the final outputs: the checkpoint is already written; stop with the signal's code."""
        received = self.schedule.received_signal(ranks_agree_now=True)  # every rank stops, or none
        if received is not None:
            name = signal.Signals(received).name
            self.write_summary({"status": "interrupted", "signal": name})
            raise TrainingInterrupted(f"stopped by {name} during the final evaluation at iteration "
                                      f"{self.iteration}; checkpoint written; finish with --resume {self.out}",
                                      received)

    def finish(self):
        """The final checkpoint (unless the loop just wrote it), samples, loss curve, FID and summary.json."""
        session, cfg, out, state = self.session, self.session.cfg, self.out, self.session.state
        self.timer.stop()
        self.require_run_folder()
        if self.checkpointed_at != cfg.iterations:
            self.save_checkpoint()
        self.stop_if_signalled()
        if self.main:
            write_samples(session, self.z_fixed, self.labels_fixed, out / "samples_final.png", self.tb, cfg.iterations)
        losses = [r for r in self.log.records if "d_loss" in r]  # not the FID points of --fid-every
        if losses:
            save_loss_curve(losses, out / "loss_curve.png")
        in_sync = {}
        if session.world.launched:  # G, D and the EMA must be the same on every rank; measured, not assumed
            # the EMA as it samples (rank 0 alone recomputed its BatchNorm statistics for samples and checkpoints)
            models = [state.G, state.D] + ([state.sampling_generator()] if state.G_ema is not None else [])
            in_sync = {"ranks_max_abs_difference": session.world.max_difference(*models)}
        started = time.perf_counter()
        scores = evaluate_generator(state.sampling_generator(), cfg, state.num_classes, session.device,
                                    cfg.fid_samples, progress=cfg.progress and self.main, references=self.references,
                                    world=session.world)
        scores["evaluation_seconds"] = round(time.perf_counter() - started, 3)  # the final scores' own cost
        self.require_run_folder()
        self.stop_if_signalled()
        tracked = {}
        if self.tracker is not None and self.tracker.points:
            tracked = self.tracker.summary()
            if self.main:
                save_fid_curve(self.tracker.points, out / "fid_curve.png", scores.get("fid_real_floor"))
        summary = self.write_summary({"status": "finished", **scores, **tracked, **in_sync})
        if self.tb is not None:
            self.tb.scalars({"iteration": cfg.iterations, "fid": summary["fid"],
                             "fid_real_floor": summary["fid_real_floor"]}, prefix="eval")
            self.tb.close()
        return summary


def track_fid(session, out, log, tb, tracker, iteration, seconds):
    """--fid-every: score the sampling generator, log the point, and keep checkpoint-best.pt at the best FID."""
    state = session.state
    point, best = tracker.score(state.sampling_generator(), iteration, seconds)
    log.append({"iteration": iteration, "fid_during_training": point["fid"], "fid_train_seconds": seconds})
    if tb is not None:
        tb.scalars({"iteration": iteration, "fid": point["fid"]}, prefix="eval_during_training")
    if best and state.first_nonfinite_iteration(0) is None and session.world.is_main:
        ckpt.save_checkpoint(out / "checkpoint-best.pt", state, iteration, session.dataset.data_shape,
                             state.num_classes, extra={"rollbacks": session.rollbacks, "fid": point["fid"]})


def handle_divergence(session, out, log, bad_at, record):
    """--on-nan stop: raise, leaving the last good checkpoint. rollback: restore the newest checkpoint with
    the learning rates halved; returns the iteration training continues from."""
    cfg, state = session.cfg, session.state
    losses = "" if record is None else f" (d_loss {record['d_loss']}, g_loss {record['g_loss']})"
    where = f"training diverged: non-finite loss or weights at iteration {bad_at}{losses}"
    newest = session.world.from_main(ckpt.numbered_checkpoints(out))  # rank 0 sees the run folder
    if cfg.on_nan == "stop" or session.rollbacks >= cfg.max_rollbacks or not newest:
        last = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written"
        tried = f" after {session.rollbacks} rollbacks" if session.rollbacks else ""
        raise TrainingDiverged(f"{where}{tried}; {last}. Try lower learning rates or --on-nan rollback",
                               bad_at)
    path, saved, _ = load_resume_state(session, out)
    lr_g, lr_d = (group["lr"] for group in (state.opt_g.param_groups[0], state.opt_d.param_groups[0]))
    ckpt.restore_training_state(state, saved, path)  # the same config: no changes to apply
    if session.graphs:  # the restored optimizer state is new tensors: capture the steps again over them
        from .graphs import GraphRunner
        session.runner = GraphRunner(state)
    session.rollbacks += 1
    lr_g, lr_d = float(lr_g) / 2, float(lr_d) / 2
    state.set_learning_rates(lr_g=lr_g, lr_d=lr_d)
    state.read_and_reset_stats()
    state.reset_divergence_flag()
    log.rewind(saved["iteration"])
    if session.world.is_main:
        print(f"{where}; rolled back to {path} (iteration {saved['iteration']}) with learning rates halved to "
              f"lr_g {lr_g:g}, lr_d {lr_d:g} (rollback {session.rollbacks} of at most {cfg.max_rollbacks})",
              file=sys.stderr)
    return saved["iteration"]


class IntervalTimer:
    """Training time per log interval, excluding side work (samples, checkpoints, FID).

    The device is waited for only where a clock is read: at each log record (``lap``) and on entering side work,
    so queued steps finish inside the timed interval, not the side work. Between those points the host never
    waits, and on a GPU it runs ahead queueing steps."""

    def __init__(self, device, seconds=0.0, images=0):
        """seconds, images: what a resumed run trained before (its checkpoint's), so the clock counts the whole
        history."""
        self.device = device
        self.seconds, self.images = float(seconds), int(images)
        self.side_work_began = self.seconds  # training seconds when the current (or last) side work began
        self.interval_seconds = 0.0  # training seconds of the last lap
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0
        self._paused_at = None  # training seconds where the clock stands still (side work, or training over)

    def sync(self):
        """Wait for the device's queued work (CPU work is synchronous: nothing to wait for)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def add_images(self, n):
        self._images += n

    @contextmanager
    def side_work(self):
        self.sync()
        side_start = time.perf_counter()
        self.side_work_began = self.seconds + side_start - self._start - self._side
        self._paused_at = self.side_work_began
        try:
            yield
        finally:
            self._paused_at = None
            self._side += time.perf_counter() - side_start

    def lap(self):
        """images/s of the interval since the last lap, and training seconds so far."""
        self.sync()
        elapsed = time.perf_counter() - self._start - self._side
        self.seconds += elapsed
        self.images += self._images
        record = {"images_per_sec": self._images / elapsed if elapsed > 0 else None, "seconds": self.seconds}
        self.interval_seconds = elapsed
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0
        return record

    def totals(self):
        """(training seconds, images) so far, the open interval included: what checkpoints and summary.json
        record."""
        seconds = self._paused_at
        if seconds is None:
            seconds = self.seconds + time.perf_counter() - self._start - self._side
        return seconds, self.images + self._images

    def stop(self):
        """Training is over: the clock stops, so the final outputs (samples, FID) do not count as training."""
        self.sync()
        self._paused_at = self.totals()[0]
