"""Fast training and inference of the evidential task model on cached features.

One call to :meth:`EvidentialLearner.fit` is step 1 of an RL-MBA round (arXiv 2603.25107):
train on the labeled set with the EDL loss (Sensoy et al., NeurIPS 2018, eq. 4 + KL annealed
to ``kl_weight``) on every modality's opinion and on the fused opinion (the geometric pool by
default, EFDA weighted evidence or TMC's Dempster-Shafer rule, Han et al., ICLR 2021). Features and labels stay on the device; the
labeled rows are gathered once per fit, and nothing is copied to the host inside the epoch
loop. Fits are warm-started across rounds unless configured otherwise, and every random draw
(initialisation, dropout, minibatch order) comes from the ``seed`` argument inside a forked RNG,
so the caller's global RNG is untouched and a fit is reproducible from its seed alone.

The input standardisation statistics of a cold fit are those of every row of ``features``;
they are computed once per features tensor (in chunks, for a million rows) and reused by
later fits, since the features do not change between rounds. Inference runs over the rows in
large chunks, converting float16 storage to float32 one chunk at a time.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlmba_env.checks import check_choice, check_int, check_real, fail
from rlmba_env.chunked import CHUNK_ROWS, column_stats, float_chunks
from rlmba_env.learner.evidential import EVIDENCE_FUNCTIONS, FUSION_METHODS, edl_loss, evidence, fuse
from rlmba_env.learner.model import MultimodalEvidentialNet
from rlmba_env.seeding import forked_torch_rng


@dataclass
class LearnerConfig:
    """Hyperparameters of the evidential learner (defaults tuned for 20-120 labels, K = 10)."""

    MIN_WIDTH = 64
    """the embedding width of ``hidden=None`` for up to 32 classes"""

    hidden: int | None = None
    """width of each modality's embedding; None: ``max(64, 2 * classes)`` (see :meth:`width`)"""
    dropout: float = 0.1
    """dropout after each encoder (training only; MC-dropout strategies reuse it)"""
    epochs: int = 100
    """optimisation epochs of a cold (from scratch) fit"""
    warm_epochs: int = 40
    """optimisation epochs of a warm-started fit (continues from the previous round's parameters)"""
    lr: float = 5e-3
    """Adam learning rate"""
    weight_decay: float = 1e-4
    """Adam L2 weight decay"""
    kl_anneal_epochs: int = 50
    """epochs over which the EDL KL coefficient rises linearly from 0 to ``kl_weight`` (0: always
    ``kl_weight``)"""
    kl_weight: float = 0.0
    """the EDL KL coefficient after annealing (Sensoy et al. use 1; 0, the default, leaves the term
    out). The KL term drives the evidence of wrong classes to zero, where a view ranks none of
    them; without it (and with ``exp`` evidence) a view keeps them graded, so that under geometric
    fusion it can veto a class (dev suite, random sampling, 2 seeds: leaves100 fused AULC .870 /
    .855 / .830 with ``exp`` evidence and 0 / 0.001 / 0.01; softplus evidence: .852 / .862 / .846
    with 0.1 / 0.01 / 0)"""
    batch_size: int | None = None
    """minibatch size; None trains full batch (one step per epoch)"""
    fusion: str = "geometric"
    """fusion rule of the loss and of every fused opinion: "geometric" (product of Dirichlet
    strengths, a log-linear pool in which a view can veto a class; the default, measured best
    on the dev suite with softplus evidence and ``kl_weight`` 0.01), "efda" (the paper's
    weighted evidence) or "ds" (Dempster-Shafer)"""
    warm_start: bool = False
    """continue from the previous fit's parameters instead of re-initialising every round"""
    fused_loss_weight: float = 1.0
    """weight of the EDL loss on the fused opinion, next to the per-modality losses"""
    evidence: str = "exp"
    """the heads' evidence function: "exp" (``exp`` of the logit clamped to [-10, 10], the default)
    or "softplus" (Sensoy et al.; see :func:`~rlmba_env.learner.evidential.evidence`). Softplus
    evidence grows linearly in the logit and, with the KL term at 0.01 (the previous default),
    under-fits many classes: leaves100's margin view reached test top-1 .43 at 500 labels against
    .59 with ``exp`` and .53 for logistic regression"""

    def __post_init__(self) -> None:
        """Check every field once; one ValueError names the first bad one."""
        name = "LearnerConfig.{}".format
        if self.hidden is not None:  # None: max(64, 2 * classes), see width()
            self.hidden = check_int(name("hidden"), self.hidden, 1)
        self.dropout = check_real(name("dropout"), self.dropout, 0.0, 1.0, high_open=True)
        self.epochs = check_int(name("epochs"), self.epochs, 1)
        self.warm_epochs = check_int(name("warm_epochs"), self.warm_epochs, 1)
        self.lr = check_real(name("lr"), self.lr, low=0.0, low_open=True)
        self.weight_decay = check_real(name("weight_decay"), self.weight_decay, low=0.0)
        self.kl_anneal_epochs = check_int(name("kl_anneal_epochs"), self.kl_anneal_epochs, 0)
        self.kl_weight = check_real(name("kl_weight"), self.kl_weight, low=0.0)
        if self.batch_size is not None:
            self.batch_size = check_int(name("batch_size"), self.batch_size, 1)
        check_choice(name("fusion"), self.fusion, FUSION_METHODS)
        if not isinstance(self.warm_start, bool):
            fail(name("warm_start"), self.warm_start, "True or False")
        self.fused_loss_weight = check_real(name("fused_loss_weight"), self.fused_loss_weight, low=0.0)
        check_choice(name("evidence"), self.evidence, EVIDENCE_FUNCTIONS)

    def width(self, n_classes: int) -> int:
        """The embedding width for ``n_classes`` classes: ``hidden``, or ``max(64, 2 * n_classes)``.

        A 64-wide embedding is a bottleneck for many classes: on the 100-class leaves data
        (dev suite, random sampling, 100-500 labels) widening it to 128 / 256 raised fused
        AULC from .757 to .783 / .795 at one seed.
        """
        return self.hidden if self.hidden is not None else max(self.MIN_WIDTH, 2 * int(n_classes))


@dataclass
class FitStats:
    """What one :meth:`EvidentialLearner.fit` did."""

    losses: list[float] = field(default_factory=list)
    """training loss of every epoch (mean over its minibatches)"""
    grad_norm: float = 0.0
    """total L2 norm of the gradient at the last optimisation step"""
    epochs: int = 0
    """epochs run in this fit"""
    seconds: float = 0.0
    """wall-clock time of the fit"""


@dataclass
class FitRequest:
    """What a round's fit needs: ``learner.fit(features, labels, rows, weights, seed)``; a batch of them
    is fitted together by :func:`fit_learners`."""

    learner: EvidentialLearner
    features: dict[str, torch.Tensor]
    labels: torch.Tensor
    rows: torch.Tensor
    """the labeled dataset rows"""
    weights: torch.Tensor
    """the modality weights of the fused loss"""
    seed: int
    """the fit's seed, drawn from the episode's generator"""


def first_layer(x: Tensor, w1: Tensor, b1: Tensor, centre: Tensor | None) -> Tensor:
    """``relu((x - centre) @ w1.T + b1)`` in float32 for a chunk of stored rows of any dtype.

    bfloat16 rows (the env's ``precision="bfloat16"``, stored centred, so ``centre`` is None)
    are multiplied as a bfloat16 product with no float32 copy of the chunk; other dtypes are
    converted to float32 first.
    """
    if x.dtype == torch.bfloat16 and centre is None:
        return F.linear(x, w1.to(torch.bfloat16)).float().add_(b1).relu_()
    x = x.float()
    if centre is not None:
        x = x - centre
    return F.linear(x, w1, b1).relu_()


class EvidentialLearner:
    """Trains and queries a :class:`MultimodalEvidentialNet` on cached features.

    Args:
        feature_dims: modality name -> feature dimension (the dataset's ``feature_dims``).
        n_classes: number of classes.
        config: hyperparameters; ``LearnerConfig()`` when None.
        device: where the network lives; the features passed to ``fit``/``predict`` must be there.
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        n_classes: int,
        config: LearnerConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        self.config = config if config is not None else LearnerConfig()
        self.device = torch.device(device)
        self.n_classes = int(n_classes)
        # built under a fixed seed so that constructing a learner neither consumes nor depends on
        # the caller's global RNG; fit() and reset() re-initialise from their own seeds anyway
        with self._rng(0):
            self.net = MultimodalEvidentialNet(
                feature_dims, n_classes, hidden=self.config.width(n_classes), dropout=self.config.dropout,
                evidence=self.config.evidence,
            ).to(self.device)
        self.modalities = self.net.modalities
        self._fitted = False
        self._epochs_done = 0  # epochs since the last cold fit; drives KL annealing
        self._stats_of: list | None = None  # weak references to the features the stats describe
        self._stats: list[tuple[Tensor, Tensor]] = []

    # -- randomness -----------------------------------------------------------------------
    def _rng(self, seed: int):
        """Draws (initialisation, dropout, minibatch order) inside depend on ``seed`` only."""
        return forked_torch_rng(self.device, seed)

    def _init_parameters(self) -> None:
        for module in self.net.modules():
            if module is not self.net and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def reset(self, seed: int) -> None:
        """Re-initialise the network's parameters deterministically from ``seed``."""
        with self._rng(seed):
            self._init_parameters()
        self._fitted = False
        self._epochs_done = 0

    # -- training -------------------------------------------------------------------------
    def _as_index(self, indices) -> Tensor:
        return torch.as_tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)

    def fit(
        self,
        features: dict[str, Tensor],
        labels: Tensor,
        indices: Tensor,
        modality_weights: Tensor,
        seed: int,
    ) -> FitStats:
        """Train on the rows ``indices`` of the whole-dataset ``features``/``labels``.

        The first fit (or every fit when ``config.warm_start`` is False) re-initialises from
        ``seed``, standardises inputs with the statistics of all rows and runs
        ``config.epochs``; later fits continue from the current parameters for
        ``config.warm_epochs``, with the KL annealing continuing where it stopped. This is
        :func:`fit_learners` with one learner.
        """
        return fit_learners([self], features, labels, [indices], [modality_weights], [seed])[0]

    STATS_CHUNK_ROWS = CHUNK_ROWS

    def _set_input_stats(self, features: dict[str, Tensor]) -> None:
        """The network's input standardisation from every row of ``features``, computed once
        per features tensor (a later fit on the same, unmodified tensors copies the cache)."""
        tensors = [features[m] for m in self.modalities]
        current = self._stats_of is not None and all(
            ref() is x and version == x._version for (ref, version), x in zip(self._stats_of, tensors)
        )
        if not current:
            if all(x.shape[0] <= self.STATS_CHUNK_ROWS for x in tensors):
                self.net.set_input_stats(features)  # exactly as before for small data
                stats = [(getattr(self.net, f"input_mean_{i}").clone(), getattr(self.net, f"input_std_{i}").clone())
                         for i in range(len(tensors))]
            else:
                stats = []
                for x in tensors:
                    mean, std = column_stats(x, self.STATS_CHUNK_ROWS)
                    mean, std = mean.to(self.device), std.to(self.device)
                    # constant columns would divide by zero
                    stats.append((mean, torch.where(std > 1e-6, std, torch.ones_like(std))))
            self._stats_of = [(weakref.ref(x), x._version) for x in tensors]
            self._stats = stats
        with torch.no_grad():
            for i, (mean, std) in enumerate(self._stats):
                getattr(self.net, f"input_mean_{i}").copy_(mean)
                getattr(self.net, f"input_std_{i}").copy_(std)

    def _stock_net(self) -> bool:
        """Whether the network is the stock per-modality MLP (Linear, ReLU, Dropout; Linear head),
        whose layers the fast training and inference paths call directly."""
        net = self.net
        return all(
            isinstance(enc, nn.Sequential) and len(enc) == 3 and isinstance(enc[0], nn.Linear)
            and isinstance(enc[1], nn.ReLU) and isinstance(enc[2], nn.Dropout) and isinstance(head, nn.Linear)
            for enc, head in zip(net.encoders, net.heads)
        )

    # -- inference ------------------------------------------------------------------------
    FOLD_MAX_OFFSET = 1e3
    """largest |mean| / std of an input column for which the mean is folded into the bias"""

    def _inference_layers(self) -> list[tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]] | None:
        """Per modality ``(W1 / std, b1', centre, W2, b2)``: the network in eval mode with the
        input standardisation folded into the first layer, so inference makes no elementwise
        pass over the features. The mean goes into the bias ``b1' = b1 - (W1 / std) mean``
        (``centre`` None) unless some column's ``|mean| / std`` exceeds :attr:`FOLD_MAX_OFFSET`,
        where that would cancel badly in float32; then rows are centred first. None when the
        network is not the stock per-modality MLP."""
        net = self.net
        if not self._stock_net():
            return None
        layers, offsets = [], []
        for i in range(len(self.modalities)):
            enc = net.encoders[i]
            mean, std = getattr(net, f"input_mean_{i}"), getattr(net, f"input_std_{i}")
            offsets.append((mean.abs() / std).max())
            layers.append((enc[0].weight / std, enc[0].bias, mean, net.heads[i].weight, net.heads[i].bias))
        fold = (torch.stack(offsets) <= self.FOLD_MAX_OFFSET).tolist()  # one host transfer
        return [
            (w1, b1 - w1 @ mean, None, w2, b2) if ok else (w1, b1, mean, w2, b2)
            for (w1, b1, mean, w2, b2), ok in zip(layers, fold)
        ]

    @torch.no_grad()
    def predict(
        self,
        features: dict[str, Tensor],
        indices: Tensor | None = None,
        batch_size: int = 65536,
    ) -> Tensor:
        """Per-modality Dirichlet parameters ``(M, n, K)`` of the rows ``indices`` (all rows if None).

        Rows are taken in chunks of ``batch_size`` (contiguous slices when ``indices`` is None,
        so no copy of float32 features is made) and converted to float32 per chunk.
        """
        return predict_learners([self], features, indices, batch_size)[0]

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The network's state dict (parameters and input standardisation)."""
        return self.net.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict written by :meth:`state_dict`; the next fit warm-starts from it."""
        self.net.load_state_dict(state_dict)
        self._fitted = True
        # a saved model was trained past the KL warm-up; do not re-warm it
        self._epochs_done = max(self._epochs_done, self.config.kl_anneal_epochs)


# -- training and inference of several learners at once ---------------------------------------
# Sub-envs of the batched vector env train their learners together: the parameters of a
# group of learners are stacked along a leading learner axis and trained with batched matrix
# products and one Adam step. Adam is elementwise and the per-learner losses are summed, so
# each learner follows exactly its own gradient. Each learner's initialisation, dropout masks
# and minibatch order come from a generator holding exactly the state its own seed gives, so a
# learner trained in a group makes the fit it would make alone; a group of one runs the
# unbatched products (``F.linear``), which makes :meth:`EvidentialLearner.fit` this code's
# n = 1 case, bit for bit. On CUDA dropout masks are drawn with ``bernoulli_`` from each
# learner's generator rather than by the fused dropout kernel.


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear`` per learner: ``x`` (n, B, in), ``weight`` (n, out, in), ``bias`` (n, out)."""
    if x.shape[0] == 1:
        return F.linear(x[0], weight[0], bias[0]).unsqueeze(0)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _device_rng_state(device: torch.device) -> Tensor:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def fit_learners(
    learners: list[EvidentialLearner],
    features: dict[str, Tensor],
    labels: Tensor,
    indices: list[Tensor],
    weights: list[Tensor],
    seeds: list[int],
) -> list[FitStats]:
    """Fit each learner on its own rows ``indices[j]``, modality weights and seed, as one
    batched model wherever several learners run the same schedule (cold or warm at the same
    epoch, same number of rows); returns their :class:`FitStats` in order.

    The learners must share configuration, feature dimensions and device, and be the stock
    per-modality MLP.
    """
    start = time.perf_counter()
    first = learners[0]
    if not first._stock_net():
        raise ValueError("EvidentialLearner trains the stock MultimodalEvidentialNet (Linear, ReLU, Dropout; "
                         "Linear head) only")
    stats: list[FitStats | None] = [None] * len(learners)
    groups: dict[tuple, list[int]] = {}
    for j, learner in enumerate(learners):
        cold = not (learner.config.warm_start and learner._fitted)
        key = (cold, 0 if cold else learner._epochs_done, int(torch.as_tensor(indices[j]).numel()))
        groups.setdefault(key, []).append(j)
    for (cold, _, _), js in groups.items():
        fits = _fit_group([learners[j] for j in js], cold, features, labels,
                          [indices[j] for j in js], [weights[j] for j in js], [seeds[j] for j in js])
        for j, fit in zip(js, fits):
            stats[j] = fit
    seconds = time.perf_counter() - start
    for fit in stats:
        fit.seconds = seconds
    return stats


def _fit_group(learners: list[EvidentialLearner], cold: bool, features: dict[str, Tensor], labels: Tensor,
               indices: list[Tensor], weights: list[Tensor], seeds: list[int]) -> list[FitStats]:
    first = learners[0]
    cfg, device = first.config, first.device
    n_learners = len(learners)
    idx = torch.stack([first._as_index(i) for i in indices])  # (n, L)
    if idx.shape[1] == 0:
        raise ValueError("fit() got no labeled rows (indices is empty)")
    y = labels[idx].to(device, torch.long)
    w = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(device) for v in weights])  # (n, M)
    n = idx.shape[1]
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)

    # Each learner's draws (initialisation, then minibatch order and dropout from a generator
    # continuing the same stream) depend on its seed only.
    generators = []
    for learner, seed in zip(learners, seeds):
        with forked_torch_rng(device, seed):
            if cold:
                learner._init_parameters()
                if first._stats_of is not None and learner._stats_of is None:
                    learner._stats_of, learner._stats = first._stats_of, first._stats
                # statistics of every row (labeled or not): the pool is known in pool-based AL
                learner._set_input_stats(features)
                learner._epochs_done = 0
            g = torch.Generator(device=device)
            g.set_state(_device_rng_state(device))
            generators.append(g)
    # standardise the labeled rows once per fit instead of once per epoch
    net0 = first.net
    x = {m: (features[m][idx].float() - getattr(net0, f"input_mean_{i}")) / getattr(net0, f"input_std_{i}")
         for i, m in enumerate(first.modalities)}  # (n, L, d_m)
    epochs = cfg.epochs if cold else cfg.warm_epochs
    epochs_done = first._epochs_done

    names = [name for name, _ in net0.named_parameters()]
    params = {name: torch.stack([dict(l.net.named_parameters())[name].detach() for l in learners]).clone()
              .requires_grad_(True) for name in names}
    # a fresh optimiser each fit: Adam's moments from last round's labeled set do not
    # describe this round's loss surface
    optimizer = _Adam(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    p_drop = float(net0.encoders[0][2].p)
    losses = torch.zeros(n_learners, epochs, device=device)
    grad_norms = torch.zeros(n_learners, device=device)
    axis = torch.arange(n_learners, device=device)[:, None]
    for epoch in range(epochs):
        t = epochs_done + epoch
        kl_coef = cfg.kl_weight * (1.0 if cfg.kl_anneal_epochs <= 0 else min(1.0, t / cfg.kl_anneal_epochs))
        orders = (torch.stack([torch.randperm(n, device=device, generator=g) for g in generators])
                  if batch < n else None)
        for lo in range(0, n, batch):
            if orders is None:
                xb, yb = x, y
            else:
                rows = orders[:, lo : lo + batch]
                xb = {m: v[axis, rows] for m, v in x.items()}
                yb = y[axis, rows]
            loss = _loss(cfg, first.modalities, params, xb, yb, w, kl_coef, generators, p_drop)  # (n,)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            losses[:, epoch] += loss.detach() * (yb.shape[1] / n)
        if epoch == epochs - 1:
            # per learner, in the order of net.parameters()
            grad_norms = torch.stack([
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(params[name].grad[e]) for name in names]))
                for e in range(n_learners)
            ])
    with torch.no_grad():
        for e, learner in enumerate(learners):
            for name, p in learner.net.named_parameters():
                p.copy_(params[name][e])
            learner.net.train()
            learner._epochs_done += epochs
            learner._fitted = True
    loss_rows, norms = losses.tolist(), grad_norms.tolist()  # one host transfer each, after the loop
    return [FitStats(losses=loss_rows[e], grad_norm=norms[e], epochs=epochs) for e in range(n_learners)]


class _Adam:
    """``torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)`` with its defaults, as
    :meth:`torch.optim.Adam.step` runs it: the same state (a CPU ``step`` tensor, zero moments)
    and the same call of torch's functional ``torch.optim.adam.adam``, so the updates are the
    same bit for bit. Not the class itself because its ``add_param_group`` and ``step`` import
    ``torch._dynamo`` on first use (about 2 s of CPU, a third of ``rlmba label next``'s
    start-up), which plain eager training never needs."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float):
        self.params, self.lr, self.weight_decay = params, lr, weight_decay
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        self.steps = [torch.tensor(0.0, dtype=scalar) for _ in params]  # on the CPU, as Adam's
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        from torch.optim.adam import adam

        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        adam([self.params[i] for i in live], [self.params[i].grad for i in live],
             [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [],
             [self.steps[i] for i in live], foreach=None, capturable=False, differentiable=False,
             fused=None, grad_scale=None, found_inf=None, has_complex=False,
             decoupled_weight_decay=False, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.lr,
             weight_decay=self.weight_decay, eps=1e-8, maximize=False)


def _loss(cfg: LearnerConfig, modalities: tuple[str, ...], params: dict[str, Tensor], x: dict[str, Tensor],
          y: Tensor, w: Tensor, kl_coef: float, generators: list[torch.Generator], p_drop: float) -> Tensor:
    """EDL loss ``(n,)`` of every learner: each modality's opinion plus the fused opinion."""
    batch = y.shape[1]
    alphas = []
    for i, m in enumerate(modalities):
        h = _linear(x[m], params[f"encoders.{i}.0.weight"], params[f"encoders.{i}.0.bias"]).relu()
        if p_drop > 0:
            # F.dropout's arithmetic, with each learner's mask from its own generator
            h = h * torch.stack([torch.empty(batch, h.shape[2], device=h.device)
                                 .bernoulli_(1 - p_drop, generator=g).div_(1 - p_drop) for g in generators])
        alphas.append(evidence(_linear(h, params[f"heads.{i}.weight"], params[f"heads.{i}.bias"]), cfg.evidence) + 1.0)
    alphas = torch.stack(alphas)  # (M, n, B, K)
    loss = sum(edl_loss(alphas[i], y, kl_coef, reduction="none").mean(-1) for i in range(alphas.shape[0]))
    if cfg.fused_loss_weight:
        fused = fuse(alphas, w.T, cfg.fusion)
        loss = loss + cfg.fused_loss_weight * edl_loss(fused, y, kl_coef, reduction="none").mean(-1)
    return loss


@torch.no_grad()
def predict_learners(
    learners: list[EvidentialLearner],
    features: dict[str, Tensor],
    indices: Tensor | None = None,
    batch_size: int = 65536,
) -> Tensor:
    """Opinions ``(n, M, rows, K)`` of every learner on the rows ``indices`` (all rows if None):
    per chunk of rows, one matrix product for the first layer of all of them (their input
    standardisation folded in), one batched product for their heads.

    Rows are taken in chunks of ``batch_size`` (contiguous slices when ``indices`` is None, so
    no copy of float32 features is made) and converted to float32 per chunk.
    """
    first = learners[0]
    for learner in learners:
        learner.net.eval()
    idx = None if indices is None else first._as_index(indices)
    n = next(iter(features.values())).shape[0] if idx is None else idx.shape[0]
    out = torch.empty(len(learners), len(first.modalities), n, first.n_classes, device=first.device)
    if n == 0:
        return out
    layers = [learner._inference_layers() for learner in learners]
    if any(lay is None for lay in layers):
        for e, learner in enumerate(learners):
            for lo in range(0, n, batch_size):
                rows = slice(lo, lo + batch_size) if idx is None else idx[lo : lo + batch_size]
                out[e, :, lo : lo + batch_size] = learner.net({m: features[m][rows].float() for m in first.modalities})
        return out
    n_learners = len(learners)
    for i, m in enumerate(first.modalities):
        w1 = torch.cat([lay[i][0] for lay in layers])  # (n * H, d)
        b1 = torch.cat([lay[i][1] for lay in layers])
        centre = layers[0][i][2]  # the learners share the input statistics of the features
        w2 = torch.stack([lay[i][3] for lay in layers])  # (n, K, H)
        b2 = torch.stack([lay[i][4] for lay in layers])
        hidden = w2.shape[2]
        x = features[m]
        if idx is None and x.dtype == torch.float16:
            chunks = float_chunks(x, batch_size)  # one float32 buffer for every chunk
        else:
            chunks = ((lo, x[slice(lo, lo + batch_size) if idx is None else idx[lo : lo + batch_size]])
                      for lo in range(0, n, batch_size))
        for lo, xc in chunks:
            h = first_layer(xc, w1, b1, centre).view(xc.shape[0], n_learners, hidden).transpose(0, 1)
            out[:, i, lo : lo + batch_size] = evidence(_linear(h, w2, b2), first.config.evidence).add_(1.0)
    return out
