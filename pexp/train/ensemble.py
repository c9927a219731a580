"""Toy runs trained together: the full-batch runs of one figure as one batched computation.

Every member is an ordinary run: it is built, seeded, resumed and finished by the loop's own pieces
(``start_run``, ``log_row``, ``save_progress``, ``finish_run`` of :mod:`pexp.train.loop`) and writes its own run
directory, so caches, resumes and figures see nothing new. Only the epochs are batched: the members' weights are
stacked along a new first dimension, each affine layer runs as one batched matmul over all members, each member's
loss is its :class:`pexp.losses.Loss`'s ``per_sample_and_gradient`` on its own data (the backward pass is written
out: autograd's per-node overhead dominates nets this small), and the update is the optimisers' own
:func:`pexp.train.optim.momentum_update` with one learning rate, momentum and weight decay per member. A member
that reaches its target margin (or its epoch cap) stops changing and is written out as the single run would be.

Batched: full-batch runs (no shuffled order), without Algorithm 1 and without per-epoch states, of ReLU-like
fully connected nets (``mlp`` without batch norm or dropout, ``linear``). Anything else is trained alone.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from pexp.config import resolve_device, validate_training
from pexp.data import Dataset
from pexp.losses import PENALTY_FORMS, Loss
from pexp.models import EntryNet, score
from pexp.runs import RunDir, training_run_dir
from pexp.train.loop import (_model_readable, epochs_since_log, finish_run, log_row, save_progress, start_run,
                             stop_rule, train, training_margin)
from pexp.train.optim import (LrSchedule, keeps_momentum, momentum_buffers, momentum_update, set_momentum_buffers,
                              update_rule)
from pexp.train.perturb import eps_at_epoch

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Tanh, nn.Sigmoid)  # act on each unit alone
SMALL = 1 << 18  # members x points x widest layer: up to this, the ensemble runs on one thread (pe-fig1: 12 x 16 x
# 20; offmanifold-fig5: 24 x 25 x 400, 30 ms per epoch on one thread against 336 ms on two, load average 12)
CHECK_EVERY = 50  # epochs between looks at which members reached their target (the only host sync besides logs)


def batchable(cfg: DictConfig) -> bool:
    """Whether a run can be a member of an ensemble (full batch, no Algorithm 1, no per-epoch states, a margin
    target at most, looked at after every epoch, a constant learning rate)."""
    return (cfg.train.batch_size is None and cfg.perturb.layers == "none"
            and not cfg.train.get("keep_states", False) and cfg.model.name in ("mlp", "linear")
            and not cfg.model.get("batch_norm", False) and not cfg.model.get("dropout", 0.0)
            and cfg.train.get("target_accuracy") is None and stop_rule(cfg).checked_always
            and LrSchedule.of(cfg.optim).constant)


def stackable(model: EntryNet) -> bool:
    """Whether the model is a chain of linear layers with elementwise activations (what the ensemble batches)."""
    names = [f"blocks.{i}.affine.{kind}" for i, block in enumerate(model.blocks)
             for kind in ("weight", "bias") if getattr(block.affine, kind) is not None]
    return (all(isinstance(block.affine, nn.Linear) and isinstance(block.activation, ELEMENTWISE)
                and isinstance(block.after, nn.Identity) and isinstance(block.before, (nn.Identity, nn.Flatten))
                for block in model.blocks)
            and [name for name, _ in model.named_parameters()] == names and not list(model.buffers()))


@dataclass
class Member:
    """One run of an ensemble: its config and directory, and the loop's own objects for it."""

    cfg: DictConfig
    run: RunDir
    data: Dataset
    model: EntryNet
    optimizer: torch.optim.Optimizer
    reduction: str
    start_epoch: int
    rows: list[dict]
    summed_loss: float = 0.0  # since its last log row
    seconds: float = 0.0      # its share of the ensemble's wall time since its last log row
    loss: Loss = field(init=False)
    loss_key: str = field(init=False)
    epochs: int = field(init=False)
    log_every: int = field(init=False)
    checkpoint_every: int = field(init=False)
    target: float | None = field(init=False)

    def __post_init__(self) -> None:  # read once: the config is slow to read in the epoch loop
        self.loss, self.loss_key = Loss.from_config(self.cfg.loss), OmegaConf.to_yaml(self.cfg.loss)
        self.epochs, self.target = int(self.cfg.train.epochs), self.cfg.train.get("target_margin")
        self.log_every = int(self.cfg.train.get("log_every", 1))
        self.checkpoint_every = int(self.cfg.train.get("checkpoint_every", 1))

    def row(self, done: int, seen_loss: float) -> dict:
        """The loop's log row after epoch ``done`` (the model must hold the weights after that epoch)."""
        seen = epochs_since_log(done, self.log_every)
        eps = eps_at_epoch(self.cfg.perturb.eps, done - 1, self.epochs, int(self.cfg.perturb.ramp_steps))
        row = log_row(self.cfg, self.run, self.model, self.data, done, eps, seen_loss, seen, self.seconds / seen)
        self.rows.append(row)
        self.summed_loss, self.seconds = 0.0, 0.0
        return row


def train_many(cfgs: Sequence[DictConfig]) -> list[RunDir]:
    """Train (or reuse) every run of ``cfgs``, the batchable ones together (grouped by device, architecture,
    data size, optimiser and starting epoch); returns their run directories in order."""
    pending: dict[str, DictConfig] = {}
    for cfg in cfgs:
        validate_training(cfg)
        run = training_run_dir(cfg)
        if batchable(cfg) and not (run.complete and _model_readable(run)):
            pending.setdefault(str(run.path), cfg)
    if len(pending) > 1:
        _train_together(list(pending.values()))
    return [train(cfg) for cfg in cfgs]  # the finished ones are reused; the rest train alone


def _train_together(cfgs: list[DictConfig]) -> None:
    runs = {str(training_run_dir(cfg).path): (cfg, training_run_dir(cfg)) for cfg in cfgs}
    with contextlib.ExitStack() as locks:
        members = []
        for path in sorted(runs):  # one order for every process: no deadlock
            cfg, run = runs[path]
            locks.enter_context(run.lock())
            if run.complete and _model_readable(run):  # finished by another process while we waited
                continue
            if run.complete:
                warnings.warn(f"run {run.path} is marked finished but its model.pt is unreadable; redoing it from "
                              f"its last valid checkpoint", stacklevel=2)
                run.mark_incomplete()
            device = resolve_device(cfg.device)
            member = Member(cfg, run, *start_run(cfg, run, device))
            if not stackable(member.model):
                continue  # trained alone by train_many afterwards
            run.stop_counting()  # the ensemble's batched passes go around the member's model
            members.append(member)
        groups: dict[tuple, list[Member]] = defaultdict(list)
        for member in members:
            if _done_already(member):
                finish_run(member.cfg, member.run, member.model, member.data, member.rows)
                continue
            shapes = tuple((name, tuple(param.shape)) for name, param in member.model.named_parameters())
            groups[(str(member.data.train.x.device), shapes, repr(member.model), member.data.input_shape,
                    len(member.data.train.y), type(member.optimizer).__name__, member.start_epoch)].append(member)
        for group in groups.values():
            if len(group) > 1:
                Ensemble(group).fit()


def _done_already(member: Member) -> bool:
    """Resumed at its epoch cap, or at its target (it stopped there when interrupted): the loop would train no
    further epoch."""
    if not member.start_epoch:
        return False
    if member.start_epoch >= member.epochs:
        return True
    x, y = member.data.train.x, member.data.train.y
    return member.target is not None and \
        float(training_margin(member.model, x, y, member.loss.decision_threshold)) >= member.target


def _activation_backward(activation: nn.Module, gradient: torch.Tensor, z: torch.Tensor,
                         out: torch.Tensor) -> torch.Tensor:
    """d/dz of an elementwise activation (``ELEMENTWISE``) applied to ``gradient``, as torch's own backward
    computes it (``out`` = activation(z))."""
    if isinstance(activation, nn.Identity):
        return gradient
    if isinstance(activation, nn.ReLU):
        return gradient.masked_fill(out <= 0, 0.0)
    if isinstance(activation, nn.LeakyReLU):
        return torch.where(z > 0, gradient, gradient * activation.negative_slope)
    if isinstance(activation, nn.Tanh):
        return gradient * (1 - out * out)
    return gradient * (1 - out) * out  # nn.Sigmoid


class Ensemble:
    """Members of one architecture, data size and optimiser, all at the same epoch, trained one batched
    full-batch epoch at a time."""

    def __init__(self, members: list[Member]):
        self.members = sorted(members, key=lambda member: member.loss_key)  # members of one loss side by side
        self.template = self.members[0].model
        self.device = self.members[0].data.train.x.device
        self.epoch = self.members[0].start_epoch
        self._stack(list(range(len(self.members))), first=True)

    # ------------------------------------------------------------------------------------------ state
    def _stack(self, keep: list[int], first: bool = False) -> None:
        """(Re)build the stacked tensors for the members at positions ``keep``."""
        if first:
            params = [torch.stack(list(ps)) for ps in zip(*(m.model.parameters() for m in self.members))]
            buffers = [torch.stack(list(bs)) for bs in zip(*(momentum_buffers(m.optimizer) for m in self.members))]
            if not any(keeps_momentum(m.optimizer) for m in self.members):
                buffers = [None] * len(params)  # plain SGD: the update needs no buffer (and no pass over one)
            self.x = torch.stack([m.data.train.x for m in self.members])
            self.y = torch.stack([m.data.train.y for m in self.members])
            self.stopped = torch.zeros(len(self.members), dtype=torch.bool, device=self.device)
            self.stop_epoch = torch.zeros(len(self.members), dtype=torch.long, device=self.device)
            self.summed = torch.zeros(len(self.members), device=self.device)
        elif not keep:
            self.members = []
            return
        else:
            index = torch.tensor(keep, device=self.device)
            params = [p.detach()[index] for p in self.params]
            buffers = [None if b is None else b[index] for b in self.buffers]
            self.x, self.y = self.x[index], self.y[index]
            self.stopped, self.stop_epoch, self.summed = self.stopped[index], self.stop_epoch[index], self.summed[index]
            self.members = [self.members[i] for i in keep]
        self.params = [p.detach().clone() for p in params]
        self.buffers = [None if b is None else b.clone() for b in buffers]
        dtype, members = self.params[0].dtype, self.members

        def per_member(values: list[float]) -> torch.Tensor:  # from float64 values, as torch rounds its arguments
            return torch.tensor(values, dtype=torch.float64).to(self.device, dtype)

        rules = [update_rule(m.optimizer) for m in members]
        self.rule = {key: per_member([rule[key] for rule in rules]) for key in rules[0]}
        self.shapes = [(-1,) + (1,) * (param.dim() - 1) for param in self.params]  # a per-member value's view
        # a value all members share stays a float (fewer and cheaper kernels; the same rounding)
        shared = {key: rules[0][key] for key in rules[0] if len({rule[key] for rule in rules}) == 1}
        self.rules = [{key: shared.get(key, value.view(shape)) for key, value in self.rule.items()}
                      for shape in self.shapes]
        n = len(members[0].data.train.y)
        divisors = {1.0 if m.reduction == "sum" else float(n) for m in members}
        self.divisor = divisors.pop() if len(divisors) == 1 else per_member(
            [1.0 if m.reduction == "sum" else float(n) for m in members])
        self.penalties: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # form: (members, strengths)
        for form in PENALTY_FORMS:
            chosen = [(i, float(m.cfg.optim.first_layer_penalty)) for i, m in enumerate(members)
                      if m.cfg.optim.get("first_layer_penalty", 0.0) and m.cfg.optim.get("penalty_form", "norm") == form]
            if chosen:
                self.penalties[form] = (torch.tensor([i for i, _ in chosen], dtype=torch.long, device=self.device),
                                        per_member([p for _, p in chosen]))
        self.losses: list[tuple[slice, Loss]] = []
        for i, member in enumerate(members):
            if self.losses and members[self.losses[-1][0].start].loss_key == member.loss_key:
                self.losses[-1] = (slice(self.losses[-1][0].start, i + 1), self.losses[-1][1])
            else:
                self.losses.append((slice(i, i + 1), member.loss))
        targets = [m.target for m in members]
        self.has_target = any(t is not None for t in targets)
        self.target = per_member([math.inf if t is None else float(t) for t in targets])
        self.threshold = per_member([m.loss.decision_threshold for m in members])
        self.sign = (2 * self.y - 1).to(dtype)

    def forward(self, x: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        """Every member's outputs (members, points, outputs): each block of the template with its affine layer
        as one batched matmul over the members' stacked weights. ``keep``: gets each block's (input, affine
        output, activation output), for :meth:`gradients`."""
        h, params = x, iter(self.params)
        for block in self.template.blocks:
            if isinstance(block.before, nn.Flatten):
                h = h.flatten(2)
            weight = next(params).transpose(1, 2)
            z = torch.baddbmm(next(params).unsqueeze(1), h, weight) if block.affine.bias is not None else h @ weight
            out = block.activation(z)
            if keep is not None:
                keep.append((h, z, out))
            h = out
        return h

    def gradients(self, kept: list, gradient: torch.Tensor) -> list[torch.Tensor]:
        """The backward pass by hand (what autograd would do, without its per-node overhead, which dominates
        these tiny nets): from d objective / d outputs through every block, the gradient of each stacked
        parameter, in the order of ``self.params``."""
        grads, params = [], self.params
        index = len(params)
        for number, (block, (h, z, out)) in enumerate(zip(reversed(self.template.blocks), reversed(kept))):
            gradient = _activation_backward(block.activation, gradient, z, out)
            bias = block.affine.bias is not None
            index -= 2 if bias else 1
            if bias:
                grads.append(gradient.sum(1))
            grads.append(torch.bmm(gradient.transpose(1, 2), h))
            if number < len(kept) - 1:
                gradient = torch.bmm(gradient, params[index])
        return grads[::-1]

    def margins(self) -> torch.Tensor:
        """The loop's ``training_margin`` of every member: min_i s_i (score(x_i) - threshold)."""
        with torch.no_grad():
            outputs = self.forward(self.x)
            scores = score(outputs.flatten(0, 1)).view(outputs.shape[:2])
            if outputs.shape[2] == 1:
                scores = scores - self.threshold[:, None]
            return (self.sign * scores).min(1).values

    def step(self) -> None:
        """One full-batch epoch of every member: the loop's ``training_step`` batched; members that reached their
        target keep their weights and momentum (learning rate and gradient factor 0, momentum 1)."""
        kept: list = []
        with torch.no_grad():
            outputs = self.forward(self.x, kept)
            totals, gradients = [], []
            for part, loss in self.losses:
                values, gradient = loss.per_sample_and_gradient(outputs[part].flatten(0, 1), self.y[part].flatten())
                totals.append(values.view(part.stop - part.start, -1).sum(1))
                gradients.append(gradient.view(outputs[part].shape))
            totals = torch.cat(totals)
            gradient = torch.cat(gradients)  # of the objective sum_m totals_m / divisor_m
            if not (isinstance(self.divisor, float) and self.divisor == 1):
                gradient = gradient / (self.divisor.view(-1, 1, 1) if isinstance(self.divisor, torch.Tensor)
                                       else self.divisor)
            grads = self.gradients(kept, gradient)
            for form, (index, strength) in self.penalties.items():
                self._penalty_gradient(grads, form, index, strength)
        rules = self.rules
        if self.has_target:  # members at their target keep their weights (and momentum)
            running = ~self.stopped
            self.summed += torch.where(running, totals.detach(), 0.0)
            frozen = dict(lr=0.0) if self.buffers[0] is None else dict(lr=0.0, momentum=1.0, undamped=0.0)
            frozen = {key: torch.where(running, self.rule[key], value) for key, value in frozen.items()}
            rules = [{**rule, **{key: value.view(shape) for key, value in frozen.items()}}
                     for rule, shape in zip(self.rules, self.shapes)]
        else:
            self.summed += totals.detach()
        for param, grad, buffer, rule in zip(self.params, grads, self.buffers, rules):
            momentum_update(param, grad, buffer, **rule)
        self.epoch += 1
        if self.has_target:
            reached = ~self.stopped & (self.margins() >= self.target)
            self.stop_epoch = torch.where(reached, self.epoch, self.stop_epoch)
            self.stopped = self.stopped | reached

    def _penalty_gradient(self, grads: list[torch.Tensor], form: str, index: torch.Tensor,
                          strength: torch.Tensor) -> None:
        """Adds the gradient of strength_m * :func:`pexp.losses.first_layer_norm` (of that ``form``) of members
        ``index``: lambda W1 / ||W1|| (norm), lambda [W1, b1] / ||[W1, b1]|| (norm_with_bias; 0 at 0, as autograd),
        lambda W1 (half_squared)."""
        weight = self.params[0][index]
        factor = strength.view(-1, *([1] * (weight.dim() - 1)))
        if form == "half_squared":
            grads[0] = grads[0].index_add(0, index, weight * factor)
            return
        bias = self.params[1][index] if form == "norm_with_bias" and self.template.blocks[0].affine.bias is not None \
            else None
        norms = (weight.flatten(1) if bias is None else torch.cat([weight.flatten(1), bias], 1)).norm(dim=1)
        scale = torch.where(norms.view_as(factor) == 0, 0.0, factor / norms.view_as(factor))
        grads[0] = grads[0].index_add(0, index, weight * scale)
        if bias is not None:
            grads[1] = grads[1].index_add(0, index, bias * scale.view(-1, 1))

    # ------------------------------------------------------------------------------------------ members
    def _load_member(self, i: int) -> Member:
        """Member ``i``'s model and optimiser given its current weights and momentum (for logs and files)."""
        member = self.members[i]
        with torch.no_grad():
            for param, stacked in zip(member.model.parameters(), self.params):
                param.copy_(stacked[i])
        if self.buffers[0] is not None:
            set_momentum_buffers(member.optimizer, [buffer[i] for buffer in self.buffers])
        return member

    def _next_boundary(self) -> int:
        """The next epoch at which to look at the members: a multiple of CHECK_EVERY or of a member's log
        interval, or a member's epoch cap."""
        done = self.epoch
        return min([done + CHECK_EVERY - done % CHECK_EVERY]
                   + [min(m.epochs, done + m.log_every - done % m.log_every) for m in self.members])

    def _settle(self, done: int, elapsed: float) -> list[dict]:
        """At epoch ``done``: log rows, checkpoints and finished runs, as the loop writes them; members that are
        finished leave the ensemble. Returns the rows written."""
        stopped, stop_epoch = self.stopped.tolist(), self.stop_epoch.tolist()
        summed = self.summed.tolist()
        self.summed.zero_()
        keep, rows = [], []
        for i, member in enumerate(self.members):
            member.seconds += elapsed / len(self.members)
            member.summed_loss += summed[i]
            last = stop_epoch[i] if stopped[i] else done
            final = stopped[i] or done == member.epochs
            if not final and last % member.log_every:
                keep.append(i)
                continue
            self._load_member(i)
            rows.append(member.row(last, member.summed_loss))
            if final or last % member.checkpoint_every == 0:
                save_progress(member.run, member.model, member.optimizer, last, member.rows)
            if final:
                finish_run(member.cfg, member.run, member.model, member.data, member.rows,
                           extra=dict(ensemble_size=len(self.members)))
            else:
                keep.append(i)
        if len(keep) < len(self.members):
            self._stack(keep)
        return rows

    def fit(self) -> None:
        """Train every member to its epoch cap or target margin, writing each run as the loop does. Small
        ensembles run on one thread (a second one only adds synchronisation to kernels this small)."""
        threads = torch.get_num_threads()
        widest = max(max(p.shape[1:]) for p in self.params if p.dim() == 3)
        if self.device.type == "cpu" and len(self.members) * len(self.members[0].data.train.y) * widest <= SMALL:
            torch.set_num_threads(1)
        try:
            self._fit()
        finally:
            torch.set_num_threads(threads)

    def _fit(self) -> None:
        names = sorted({str(m.cfg.run_name) for m in self.members})
        label = f"ensemble of {len(self.members)} ({', '.join(names)})"
        cap = max(m.epochs for m in self.members)
        progress = all(bool(m.cfg.train.progress) for m in self.members)
        print(f"[pexp] training {label} together from epoch {self.epoch} on {self.device}")
        bar = tqdm(total=cap, initial=self.epoch, desc=label[:60], unit="epoch", disable=not progress)
        started, boundary = time.perf_counter(), self._next_boundary()
        while self.members:
            self.step()
            if self.epoch < boundary:
                continue
            bar.update(self.epoch - bar.n)
            now = time.perf_counter()
            rows = self._settle(self.epoch, now - started)
            started = now
            if self.members:
                boundary = self._next_boundary()
            if rows and not progress:
                losses = [row["loss"] for row in rows]
                print(f"[pexp] {label}: epoch {self.epoch}/{cap}, {len(rows)} rows (loss {min(losses):.4g} to "
                      f"{max(losses):.4g}), {len(self.members)} still training")
        bar.close()
