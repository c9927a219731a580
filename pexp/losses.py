"""The training objective: one class per loss (``loss.name``, conf/loss/<name>.yaml) and the first-layer penalty.

A loss is built once from its config group (:meth:`Loss.from_config`: reading a DictConfig costs tens of
microseconds, too much per step) and owns everything that depends on which loss it is: the per-sample loss on the
model's outputs, its gradient with respect to them (closed form; the toy ensemble's hand-written backward pass
starts from it), where a one-output model's decision flips, the model as logits for attacks and error counts, the
model that error counts judge, and its rule on the config (the model's number of outputs, its own keys).

Adding a loss is one subclass of :class:`Loss` here, registered under its name with :func:`register`, and one
conf/loss/<name>.yaml (``name`` and ``outputs``); only :meth:`Loss.values` is required (the gradient defaults to
autograd's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pexp.checks import check_choice, check_number, get_required
from pexp.errors import ConfigError
from pexp.models import AsLogits, EntryNet, NearestTarget, simplex_targets

LOSSES: dict[str, type[Loss]] = {}  # loss.name: its class, in the order the errors list them


def register(name: str) -> Callable[[type[Loss]], type[Loss]]:
    """Class decorator: the loss built for configs with ``loss.name`` = ``name``."""
    def decorate(cls: type[Loss]) -> type[Loss]:
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is registered already ({LOSSES[name].__name__})")
        cls.name = name
        LOSSES[name] = cls
        return cls
    return decorate


def validate_loss(cfg: DictConfig) -> None:
    """The loss group of a training config, and the model's number of outputs it needs (one line per error)."""
    check_choice(cfg, "loss.name", LOSSES)
    check_number(cfg, "loss.output_divisor", low=0, low_open=True, optional=True)
    LOSSES[cfg.loss.name].check_config(cfg, get_required(cfg, "model.outputs"))


@dataclass(frozen=True)
class Loss:
    """A loss on the model's outputs divided by ``divisor`` (``loss.output_divisor``, default 1)."""

    name: ClassVar[str]  # set by register
    divisor: float = 1.0

    # Algorithm 1 (pexp.train.perturb): None pushes the model's score up and down; a number picks one direction
    # v_i per sample in the output space first (PE section 7.1), in at most that many rounds (a loss that needs
    # them makes it a field). Not annotated here: not a field of the losses that do not.
    direction_rounds = None

    @staticmethod
    def from_config(cfg: DictConfig) -> Loss:
        """The loss a (validated) loss config names, its values read once."""
        return LOSSES[str(cfg.name)].read(cfg)

    @classmethod
    def read(cls, cfg: DictConfig) -> Loss:
        """This loss from its config group (a subclass with its own keys reads them here)."""
        return cls(divisor=float(cfg.get("output_divisor", 1)))

    @classmethod
    def check_config(cls, cfg: DictConfig, outputs: Any) -> None:
        """This loss's rule on the whole config (its own keys, ``outputs`` = model.outputs): one output."""
        if outputs != 1:
            raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss {cls.name}: must be 1")

    def check_labels(self, labels: torch.Tensor, data: str) -> None:
        """Whether the loss can learn the training ``labels`` of data set ``data`` (checked once they are loaded)."""

    # ------------------------------------------------------------------------------------ on the outputs
    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One value per sample, on the outputs already divided by ``divisor``."""
        raise NotImplementedError

    def gradient(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """d :meth:`values` / d ``scaled``, one row per sample (here by autograd; the losses below in closed form,
        equal to autograd, tested)."""
        with torch.enable_grad():
            leaf = scaled.detach().requires_grad_(True)
            return torch.autograd.grad(self.values(leaf, targets).sum(), leaf)[0]

    def scaled(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs / self.divisor if self.divisor != 1 else outputs

    def per_sample(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each sample, on the outputs divided by ``divisor``."""
        return self.values(self.scaled(outputs), targets)

    def per_sample_and_gradient(self, outputs: torch.Tensor,
                                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`per_sample` and its gradient with respect to ``outputs`` (one row per sample)."""
        scaled = self.scaled(outputs)
        gradient = self.gradient(scaled, targets)
        return self.values(scaled, targets), gradient / self.divisor if self.divisor != 1 else gradient

    # ------------------------------------------------------------------------------------ decisions
    @property
    def decision_threshold(self) -> float:
        """Where a one-output model's decision flips, on the raw output (logits: unused)."""
        return 0.0

    def as_logits(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as logits for the margin search and error counts: :class:`AsLogits` at the threshold (a
        one-output model as the two logits (threshold, f); logits pass through)."""
        return AsLogits(model, self.decision_threshold)

    def judged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """What error counts judge (with :attr:`decision_threshold`): the model itself."""
        return model


def _one_output_gradient(column: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
    """A gradient that lives in the first output only: ``column`` there, zeros in the others."""
    return F.pad(column[:, None], (0, scaled.shape[1] - 1))


@register("mse")
@dataclass(frozen=True)
class SquaredError(Loss):
    """(f - t_y)^2 on one output with t = ``loss.targets`` (default 0/1); decides at the targets' midpoint."""

    low: float = 0.0   # loss.targets: the targets of classes 0 and 1
    high: float = 1.0

    @classmethod
    def read(cls, cfg: DictConfig) -> Loss:
        low, high = (float(value) for value in cfg.get("targets", (0.0, 1.0)))
        return cls(divisor=float(cfg.get("output_divisor", 1)), low=low, high=high)

    def _targets(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # made on the device (a tensor from a list would copy from the host)
        return torch.where(targets.bool(), scaled.new_full((), self.high), scaled.new_full((), self.low))

    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (scaled[:, 0] - self._targets(scaled, targets)) ** 2

    def gradient(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _one_output_gradient(2 * (scaled[:, 0] - self._targets(scaled, targets)), scaled)

    @property
    def decision_threshold(self) -> float:
        return self.divisor * (self.low + self.high) / 2


@register("ce")
@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Cross-entropy on logits, one per class (at least two)."""

    @classmethod
    def check_config(cls, cfg: DictConfig, outputs: Any) -> None:
        if not (isinstance(outputs, int) and outputs >= 2):
            raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss {cls.name}: must be an integer >= 2")

    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scaled, targets, reduction="none")

    def gradient(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scaled, 1) - F.one_hot(targets, scaled.shape[1]).to(scaled.dtype)


@register("logistic")
@dataclass(frozen=True)
class Logistic(Loss):
    """Binary cross-entropy of sigmoid(f) against the 0/1 target, on one output; decides by f > 0."""

    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(scaled[:, 0], targets.to(scaled.dtype), reduction="none")

    def gradient(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _one_output_gradient(torch.sigmoid(scaled[:, 0]) - targets.to(scaled.dtype), scaled)


@register("simplex")
@dataclass(frozen=True)
class Simplex(Loss):
    """PE section 7.1: ||f - z_y||^2 with z the ``loss.classes`` equidistant unit-distance targets in
    R^(classes - 1) (:func:`pexp.models.simplex_targets`; two classes: (f - y)^2, the mse); the class is the
    nearest target; Algorithm 1 picks one output direction per sample, in at most ``loss.direction_rounds``
    rounds."""

    classes: int = 2
    direction_rounds: int = 0

    @classmethod
    def read(cls, cfg: DictConfig) -> Loss:
        return cls(divisor=float(cfg.get("output_divisor", 1)), classes=int(cfg.get("classes", 2)),
                   direction_rounds=int(cfg.get("direction_rounds", 0)))

    @classmethod
    def check_config(cls, cfg: DictConfig, outputs: Any) -> None:
        check_number(cfg, "loss.classes", low=2, integer=True)
        check_number(cfg, "loss.direction_rounds", low=0, integer=True)
        if outputs != cfg.loss.classes - 1:  # m equidistant targets in R^(m-1): m - 1 outputs
            raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss {cls.name} and loss.classes="
                              f"{cfg.loss.classes}: must be loss.classes - 1 = {cfg.loss.classes - 1}")

    def check_labels(self, labels: torch.Tensor, data: str) -> None:
        if int(labels.max()) >= self.classes:
            raise ConfigError(f"loss.classes={self.classes} is not allowed for data {data} with "
                              f"{int(labels.max()) + 1} classes: must be at least that")

    def _targets(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return simplex_targets(self.classes, scaled.dtype).to(scaled.device)[targets]

    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((scaled - self._targets(scaled, targets)) ** 2).sum(1)

    def gradient(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 2 * (scaled - self._targets(scaled, targets))

    @property
    def decision_threshold(self) -> float:
        """0.5 (two classes: targets 0 and 1) times the divisor; with more, the nearest target decides."""
        return 0.5 * self.divisor

    def as_logits(self, model: torch.nn.Module) -> torch.nn.Module:
        """Minus the squared distances to the target vectors: the argmax is the nearest target."""
        return NearestTarget(model, simplex_targets(self.classes) * self.divisor)

    def judged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.as_logits(model)


# ---------------------------------------------------------------------------------------- first-layer penalty
PENALTY_FORMS = ("norm", "norm_with_bias", "half_squared")  # optim.penalty_form


def first_layer_norm(model: EntryNet, form: str) -> torch.Tensor:
    """The first affine layer's penalised size (paper OM, fig3 (c)): norm = ||W1||_F (the paper's text),
    norm_with_bias = ||[W1, b1]||_F (the authors' code), half_squared = ||W1||_F^2 / 2 (the paper's definition of
    L2 regularisation, lambda/2 ||w||^2)."""
    layer = model.affine(model.layer_names[0])
    if form == "norm_with_bias" and layer.bias is not None:
        return torch.cat([layer.weight.flatten(), layer.bias.flatten()]).norm()
    if form == "half_squared":
        return layer.weight.pow(2).sum() / 2
    return layer.weight.norm()
