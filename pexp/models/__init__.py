"""Networks with a perturbation entry point before every affine layer (Algorithm 1 of Nar & Sastry)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Optional, Sequence

import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from pexp.data.toys import draw_pe_fig1_points
from pexp.errors import ConfigError
from pexp.schema import UNSET, cross_check, flag, integer, integers, number, store

Perturbations = Sequence[torch.Tensor | None]


class Block(nn.Module):
    """One affine layer followed by its activation and an optional pooling / flattening
    (``before``: a reshaping of the block's input, e.g. flattening an image for a first linear layer)."""

    def __init__(self, affine: nn.Module, activation: nn.Module | None = None, after: nn.Module | None = None,
                 before: nn.Module | None = None):
        super().__init__()
        self.before = before or nn.Identity()
        self.affine = affine
        self.activation = activation or nn.Identity()
        self.after = after or nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.after(self.activation(self.affine(self.before(h))))


class EntryNet(nn.Module):
    """A chain of blocks, each starting with an affine layer; ``forward(x, perturbations)`` adds
    ``perturbations[i]`` (batch dimension first, one perturbation per sample, or None) to the input of block i."""

    def __init__(self, blocks: Sequence[Block], names: Sequence[str], input_shape: Sequence[int]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.layer_names = list(names)
        self.input_shape = tuple(input_shape)
        self.eval()  # the shape probe is one sample: batch-norm needs inference mode
        with torch.no_grad():
            shapes, h = [], torch.zeros(1, *input_shape)
            for block in self.blocks:
                shapes.append(tuple(h.shape[1:]))
                h = block(h)
        self.train()
        self.entry_shapes: list[tuple[int, ...]] = shapes
        self.outputs = h.shape[1]

    def forward(self, x: torch.Tensor, perturbations: Perturbations | None = None) -> torch.Tensor:
        h = x
        for index, block in enumerate(self.blocks):
            if perturbations is not None and perturbations[index] is not None:
                h = h + perturbations[index]
            h = block(h)
        return h

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations of every hidden layer (after the nonlinearity, before pooling), flattened per sample."""
        outputs, h = [], x
        for block in self.blocks[:-1]:
            a = block.activation(block.affine(block.before(h)))
            outputs.append(a.flatten(1))
            h = block.after(a)
        return outputs

    def affine(self, name: str) -> nn.Module:
        return self.blocks[self.layer_names.index(name)].affine


def prefers_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether image batches ``x`` through ``model`` run faster in channels-last memory format: images through a
    convolutional model on the CPU, where convolutions and max-pooling in that format are 1.3-1.5x faster (measured
    on the PE-net: Algorithm 1 steps 1.5x, plain steps 1.35x, one-sample steps 1.1x; the same values up to float
    rounding, like another CPU's kernels)."""
    return x.dim() == 4 and x.device.type == "cpu" and any(p.dim() == 4 for p in model.parameters())


def score(outputs: torch.Tensor) -> torch.Tensor:
    """The scalar a model's decision thresholds: f for one output, logit_1 - logit_0 for two."""
    return outputs[:, 0] if outputs.shape[1] == 1 else outputs[:, 1] - outputs[:, 0]


def predict(outputs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class predictions: f > threshold for one output (0.5 for 0/1 squared-error targets), argmax for logits."""
    return (outputs[:, 0] > threshold).long() if outputs.shape[1] == 1 else outputs.argmax(1)


class AsLogits(nn.Module):
    """Present a one-output model to attacks as the two logits (threshold, f(x)): (0.5, f(x)) for a squared-error
    model with 0/1 targets. Models with logits pass through."""

    def __init__(self, model: nn.Module, threshold: float = 0.5):
        super().__init__()
        self.model = model
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if out.shape[1] != 1:
            return out
        return torch.cat([torch.full_like(out, self.threshold), out], dim=1)


def simplex_targets(classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``classes`` target vectors of PE section 7.1 (Corollary 3): rows of a (classes, classes - 1) matrix,
    pairwise at distance exactly 1 (a regular simplex). Target 0 is the origin and target i (i >= 1) row i - 1 of
    the Cholesky factor of the Gram matrix [1 on the diagonal, 1/2 elsewhere], so two classes give 0 and 1: the
    binary squared-error targets."""
    if classes < 2:
        raise ValueError(f"simplex_targets needs at least two classes, got {classes}")
    gram = torch.full((classes - 1, classes - 1), 0.5, dtype=torch.float64).fill_diagonal_(1.0)
    return torch.cat([torch.zeros(1, classes - 1, dtype=torch.float64), torch.linalg.cholesky(gram)]).to(dtype)


class NearestTarget(nn.Module):
    """Present an (m-1)-output squared-error model to attacks and error counts as m logits: minus the squared
    distance of f(x) to each target vector, so the argmax is the nearest target (PE section 7.1's classifier) and
    a logit difference is affine in f(x)."""

    def __init__(self, model: nn.Module, targets: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("targets", targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return -((out[:, None, :] - self.targets.to(out.dtype)) ** 2).sum(-1)


def conv_net(widths: Sequence[int], negative_slope: float, outputs: int, input_shape: Sequence[int]) -> EntryNet:
    """conv(c1, 5x5) lrelu pool, conv(c2, 5x5) lrelu pool, fc(f1) lrelu, fc(f2) lrelu, fc(outputs)."""
    act = lambda: nn.LeakyReLU(float(negative_slope))  # noqa: E731
    c1, c2, f1, f2 = (int(width) for width in widths)
    conv_out = c2 * ((((input_shape[1] - 4) // 2) - 4) // 2) ** 2
    blocks = [
        Block(nn.Conv2d(input_shape[0], c1, 5), act(), nn.MaxPool2d(2)),
        Block(nn.Conv2d(c1, c2, 5), act(), nn.Sequential(nn.MaxPool2d(2), nn.Flatten())),
        Block(nn.Linear(conv_out, f1), act()),
        Block(nn.Linear(f1, f2), act()),
        Block(nn.Linear(f2, int(outputs))),
    ]
    return EntryNet(blocks, ["conv1", "conv2", "fc1", "fc2", "fc3"], input_shape)


def pe_net(cfg: DictConfig, input_shape: Sequence[int]) -> EntryNet:
    """The PE-net with size multiplier s: channels 6s, 16s, widths 120s, 96s."""
    s = int(cfg.size)
    return conv_net([6 * s, 16 * s, 120 * s, 96 * s], cfg.negative_slope, cfg.outputs, input_shape)


def richness_cnn(cfg: DictConfig, input_shape: Sequence[int]) -> EntryNet:
    """Paper R's 5-layer CNN (widths 6, 18, 120, 84): hidden layers of 4704, 1800, 120 and 84 units on 32x32."""
    return conv_net(cfg.widths, cfg.negative_slope, cfg.outputs, input_shape)


def mlp(cfg: DictConfig, input_shape: Sequence[int]) -> EntryNet:
    """Fully connected ReLU network: flatten -> widths... -> outputs (PyTorch's default init,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))); ``batch_norm`` (before each ReLU) and ``dropout`` (after the ReLU of every
    hidden layer but the first, as Table 1 of paper TS marks them) give the variants of paper TS's Table 1;
    ``bias: false`` leaves every layer without biases (paper OM's fig4 nets)."""

    sizes = [int(torch.tensor(input_shape).prod()), *map(int, cfg.widths)]
    batch_norm, dropout = bool(cfg.get("batch_norm", False)), float(cfg.get("dropout", 0.0))  # paper TS, Table 1
    bias = cfg.get("bias", True)
    if not isinstance(bias, bool):
        raise ConfigError(f"model.bias={bias!r} is not allowed: must be true or false")

    def hidden(width_in: int, width_out: int, first: bool) -> Block:
        activation = nn.Sequential(nn.BatchNorm1d(width_out), nn.ReLU()) if batch_norm else nn.ReLU()
        return Block(nn.Linear(width_in, width_out, bias=bias), activation,
                     nn.Dropout(dropout) if dropout and not first else None)

    blocks = [hidden(a, b, i == 0) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    blocks.append(Block(nn.Linear(sizes[-1], int(cfg.outputs), bias=bias)))
    blocks[0].before = nn.Flatten()
    bias_scale = float(cfg.get("hidden_bias_scale", 1.0))  # pe-fig1: hidden biases x10 after default init
    if bias_scale != 1.0:
        with torch.no_grad():
            for block in blocks[:-1]:
                block.affine.bias.mul_(bias_scale)
    return EntryNet(blocks, [f"fc{i + 1}" for i in range(len(blocks))], input_shape)


def fold_batch_norm(model: EntryNet) -> EntryNet:
    """An inference-mode copy of ``model`` in which every BatchNorm1d that directly follows a block's Linear layer
    (``activation = Sequential(BatchNorm1d, ...)``, as ``mlp`` builds it) is folded into that layer,
    W' = diag(g) W and b' = g (b - running_mean) + beta with g = gamma / sqrt(running_var + eps), and every Dropout
    (the identity at evaluation) is removed: the same outputs as ``model.eval()``, as plain Linear -> ReLU blocks."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for block in folded.blocks:
            parts = list(block.activation) if isinstance(block.activation, nn.Sequential) else [block.activation]
            if parts and isinstance(parts[0], nn.BatchNorm1d) and isinstance(block.affine, nn.Linear):
                norm, affine = parts.pop(0), block.affine
                scale = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / torch.sqrt(
                    norm.running_var + norm.eps)
                bias = affine.bias if affine.bias is not None else torch.zeros_like(scale)
                shift = norm.bias if norm.affine else torch.zeros_like(scale)
                new = nn.Linear(affine.in_features, affine.out_features).to(affine.weight)
                new.weight.copy_(affine.weight * scale[:, None])
                new.bias.copy_((bias - norm.running_mean) * scale + shift)
                block.affine = new
            parts = [part for part in parts if not isinstance(part, nn.Dropout)]
            block.activation = parts[0] if len(parts) == 1 else nn.Sequential(*parts) if parts else nn.Identity()
            if isinstance(block.after, nn.Dropout):
                block.after = nn.Identity()
    return folded


def linear(cfg: DictConfig, input_shape: Sequence[int]) -> EntryNet:
    """An affine classifier w.x + b (PyTorch's default init)."""
    size = int(torch.tensor(input_shape).prod())
    return EntryNet([Block(nn.Linear(size, int(cfg.outputs)), before=nn.Flatten())], ["fc1"], input_shape)


MODELS: dict[str, Callable[[DictConfig, Sequence[int]], EntryNet]] = {"pe_net": pe_net, "richness_cnn": richness_cnn, "mlp": mlp,
                                                                      "linear": linear}
ModelName = StrEnum("ModelName", {name: name for name in sorted(MODELS)})


@dataclass
class PeNetConfig:
    """model=pe_net (conf/model/pe_net.yaml)."""

    name: ModelName = ModelName.pe_net
    size: int = integer(2, ge=1)  # width multiplier s
    outputs: int = 1
    negative_slope: Any = number(0.01, ge=0)


@dataclass
class RichnessCnnConfig:
    """model=richness_cnn (conf/model/richness_cnn.yaml)."""

    name: ModelName = ModelName.richness_cnn
    widths: Any = integers([6, 18, 120, 84], ge=1, length=4)
    outputs: int = 1
    negative_slope: Any = number(0.01, ge=0)


@dataclass
class MlpConfig:
    """model=mlp and model=toy_mlp (conf/model/mlp.yaml, toy_mlp.yaml); the keys after outputs are absent unless
    set (defaults: biases, no batch norm, no dropout, hidden biases x1)."""

    name: ModelName = ModelName.mlp
    widths: Any = integers([100, 100, 100, 100], ge=1)
    outputs: int = 1
    hidden_bias_scale: Any = number(null=True)
    bias: Any = flag()
    batch_norm: Any = flag()
    dropout: Any = number(ge=0, lt=1, null=True)


@dataclass
class LinearConfig:
    """model=linear (conf/model/linear.yaml)."""

    name: ModelName = ModelName.linear
    outputs: int = 1


for _schema, _name in ((PeNetConfig, "pe_net"), (RichnessCnnConfig, "richness_cnn"), (MlpConfig, "mlp"),
                       (LinearConfig, "linear")):
    store(_schema, _name, "model")


def layer_names(model: DictConfig) -> list[str] | None:
    """The affine layers' names of the model a config builds, without building it (None for a model this does
    not know)."""
    if model.name in ("pe_net", "richness_cnn"):
        return ["conv1", "conv2", "fc1", "fc2", "fc3"]
    if model.name == "mlp":
        return [f"fc{i + 1}" for i in range(len(model.widths) + 1)]
    if model.name == "linear":
        return ["fc1"]
    return None


def build_model(cfg: DictConfig, input_shape: Sequence[int], init: DictConfig | None = None) -> EntryNet:
    """Instantiate ``cfg.name`` for inputs of ``input_shape`` (the caller seeds torch first)."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name={cfg.name!r} is not allowed: choose one of {', '.join(sorted(MODELS))}")
    if init is not None and init.get("rng_order") == "authors_pe_fig1":
        replay_pe_fig1_authors(cfg, input_shape, init)
    model = MODELS[cfg.name](cfg, input_shape)
    if init is not None:
        init_weights(model, init)
    return model


def replay_pe_fig1_authors(cfg: DictConfig, input_shape: Sequence[int], init: DictConfig) -> None:
    """Put torch's global generator where the authors' pe-fig1 script has it when it builds ``init.network``:
    seeded with ``init.seed``, after drawing the 16 points and, for the squared-error net (``se``), after building
    the cross-entropy net and its ``init.epochs`` epochs of a shuffling DataLoader (two int64 draws each). The net
    built next then has the authors' initial weights for that seed."""
    if init.get("network") not in ("ce", "se"):
        raise ConfigError(f"init.network={init.get('network')!r} is not allowed with init.rng_order=authors_pe_fig1: "
                          "choose one of ce, se")
    torch.manual_seed(int(init.seed))
    draw_pe_fig1_points(torch.default_generator, authors=True)
    if init.network == "se":
        MODELS[cfg.name](cfg, input_shape)  # the cross-entropy net, built first
        for _ in range(2 * int(init.epochs)):
            torch.empty((), dtype=torch.int64).random_()


class InitScheme(StrEnum):
    default = "default"  # PyTorch's
    normal_fan_in = "normal_fan_in"  # every weight N(0, 1/fan_in), the paper OM authors' code


class InitRngOrder(StrEnum):
    authors_pe_fig1 = "authors_pe_fig1"  # replay_pe_fig1_authors


class InitNetwork(StrEnum):
    ce = "ce"
    se = "se"


@dataclass
class InitConfig:
    """The init group (conf/init/*.yaml): see init_weights; the keys after layers are absent unless set."""

    factor: Any = number(1.0, gt=0)  # weights of `layers` are divided by this
    layers: Any = "all"  # all | a list of affine layer names ('first': the first affine layer)
    scheme: Optional[InitScheme] = UNSET
    first_std: Any = number(gt=0, null=True)
    output_signs: Any = flag()
    rng_order: Optional[InitRngOrder] = UNSET  # with network, seed, epochs: replay_pe_fig1_authors
    network: Optional[InitNetwork] = UNSET
    seed: Optional[int] = UNSET  # ${seed} and ${train.epochs}, checked there
    epochs: Optional[int] = UNSET


store(InitConfig, "init", "init")


@cross_check("init")
def check_init(cfg: DictConfig) -> None:
    """What the schema cannot say: init.layers against the model's layer names, the network to replay."""
    layers = cfg.init.layers
    if not (layers == "all" or isinstance(layers, (list, ListConfig))):
        raise ConfigError(f"init.layers={layers!r} is not allowed: must be 'all' or a list of layer names")
    names = layer_names(cfg.model)
    if names is not None and layers != "all":
        for name in layers:
            if name != "first" and name not in names:
                raise ConfigError(f"init.layers entry {name!r} is not allowed for model {cfg.model.name}: choose "
                                  f"from all, first, {', '.join(names)}")
    if cfg.init.get("rng_order") is not None and cfg.init.get("network") is None:
        raise ConfigError(f"init.network=None is not allowed with init.rng_order={cfg.init.rng_order}: choose one "
                          f"of {', '.join(InitNetwork)}")


INIT_SCHEMES = tuple(InitScheme)


def init_weights(model: EntryNet, init: DictConfig) -> None:
    """Set the initial weights as ``init`` says, in this order (biases keep PyTorch's default):
    ``scheme``: default (PyTorch's) or normal_fan_in (every weight N(0, 1/fan_in), the paper OM authors' code);
    ``first_std``: the first affine layer's weights N(0, first_std^2) instead; ``output_signs``: the last layer's
    weights uniform on {-1, +1}; then the weights of ``layers`` ('all', or names; 'first' = the first affine
    layer) are divided by ``factor``."""
    factor = float(init.factor)
    names = model.layer_names if init.layers == "all" else [
        model.layer_names[0] if name == "first" else name for name in init.layers]
    for name in names:
        if name not in model.layer_names:
            raise ConfigError(f"init.layers entry {name!r} is not allowed: choose from all, first, "
                              f"{', '.join(model.layer_names)}")
    scheme, first_std = init.get("scheme", "default"), init.get("first_std")
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"init.scheme={scheme!r} is not allowed: choose one of {', '.join(INIT_SCHEMES)}")
    with torch.no_grad():
        if scheme == "normal_fan_in":
            for name in model.layer_names:
                weight = model.affine(name).weight
                weight.normal_(0.0, weight[0].numel() ** -0.5)
        if first_std is not None:
            model.affine(model.layer_names[0]).weight.normal_(0.0, float(first_std))
        if init.get("output_signs", False):
            weight = model.affine(model.layer_names[-1]).weight
            weight.copy_(torch.randint(0, 2, weight.shape).to(weight) * 2 - 1)
        if factor != 1.0:
            for name in names:
                model.affine(name).weight.div_(factor)
