"""Running batches on the device: bucketed shapes, pinned memory, CUDA graphs.

The engine hands over batches of any size up to ``max_batch_size``. On CUDA, a batch is padded
with silent rows to the next power-of-two bucket so that only a handful of shapes ever reach the
GPU: cuDNN autotuning (``cudnn.benchmark``) then pays off, and the forward pass of each small
bucket is captured once in a CUDA graph and replayed, removing the kernel-launch overhead that
dominates small batches. Larger buckets run the front-end eagerly (there whole-model graphs were
measured slower) and replay only the back-end from a graph: Nes2Net-X is launch-bound at every
batch size (measured 16.2 ms eager vs 5.2 ms graph-replayed at batch 128 on an H200). When the
front-end uses no cuDNN convolution (the SSL front-end with the GEMM conv encoder and the FFT
positional convolution, the defaults), a large batch runs its front-end on its real rows only
and just the back-end sees the padded bucket: under load, batches of 129-255 windows no longer
pay for 256 (:attr:`BatchRunner.pad_frontend`).
Every operation of the model works per sample (layer/batch norm in eval mode, attention within
a window), so padding rows never change the scores of real rows; a test checks it. Host
batches are written row by row straight into pinned memory and copied asynchronously, on a
stream of their own so that the copy overlaps the previous batch's kernels;
:meth:`BatchRunner.launch` returns as soon as the work is queued (logits come back through an
asynchronous copy), so the engine can stage the next batch while this one runs. With
``cast_weights`` the model itself is cast to the dtype (bf16 weights and activations) instead of
running under autocast.

With a :class:`ConvFeatureCache` (SSL front-ends with a reusable convolutional geometry), a
batch whose rows carry stream keys runs the convolutional encoder only on each window's new
audio; such batches run their front-end eagerly (the cached frames differ per batch, so they
cannot be replayed from a graph), which is where the cache pays off anyway: large batches.
When every row of a batch reuses its previous window (a busy engine's steady state), only the
tail of each window that the encoder reads is staged and copied (about a quarter of a 4 s
window at a 1 s hop).

With ``compile_backend`` the back-end runs through ``torch.compile`` (inductor fuses the
hundreds of small per-channel kernels of Nes2Net-X: activations, batch norms, weighted sums),
replayed from the same graphs; compilation happens at the first batch of a shape (warm-up), and
any failure to compile (no compiler on the host, an unsupported operation) falls back to the
eager back-end with a warning. With buckets (CUDA) only buckets of at least
``compile_min_batch`` rows run compiled, each compiled for its own shape: on an H200 static
shapes made the graph-replayed back-end 2x faster at batch 256, while one version with a
dynamic batch size made the engine slower than no compilation (docs/benchmarks.md); smaller
buckets keep the eager back-end, replayed from graphs. Without buckets one version with an
automatic dynamic batch size covers every batch size. ``compile_norms`` likewise compiles the
SSL front-end's layer norms with the residual add or GELU next to them
(:mod:`nes2net_stream.models.fused_norms`; one version with a dynamic row count for all shapes).

Graph capture is a function (:data:`Capture`, :mod:`nes2net_stream.service.capture`):
:func:`cuda_capture` on CUDA; the CPU tests pass
:func:`eager_capture`, which keeps the static-buffer semantics, to check these paths against
eager execution without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from nes2net_stream.errors import BundleError
from nes2net_stream.logs import get_logger
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.capture import (
    Capture,
    Compiler,
    Forward,
    Launched,
    cuda_capture,
    default_compiler,
)
from nes2net_stream.service.feature_cache import ConvFeatureCache

log = get_logger("nes2net.runner")

def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``rows`` (itself when it has them already)."""
    if t.shape[0] >= rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])])


def buckets_up_to(limit: int) -> list[int]:
    """Powers of two below ``limit``, then ``limit`` itself."""
    out, b = [], 1
    while b < limit:
        out.append(b)
        b *= 2
    out.append(limit)
    return out


class BatchRunner:
    """Forward passes of fixed-length windows, bucketed (and graph-captured on CUDA)."""

    def __init__(self, detector: Detector, *, window_samples: int, max_batch_size: int,
                 dtype: torch.dtype | None = None, use_buckets: bool | None = None,
                 cuda_graphs: bool = True, graph_max_batch: int = 16,
                 backend_graphs: bool = True, feature_cache: bool = False,
                 feature_cache_entries: int = 10_000, cast_weights: bool = False,
                 conv_encoder: str = "gemm", pos_conv: str = "fft",
                 encoder_layers: str = "fused", graph_capture: Capture | None = None,
                 compile_backend: bool = False, compile_min_batch: int = 128,
                 compiler: Compiler | None = None, compile_norms: bool = False,
                 copy_stream: bool = True):
        self.detector = detector.eval()
        # the SSL conv encoder as channels-last matrix products (models/conv_gemm.py) and the
        # positional convolution through FFTs (models/pos_conv_fft.py), where the model has them
        self._use_form(self.detector.set_conv_impl, "conv_encoder", conv_encoder)
        self._use_form(self.detector.set_pos_conv_impl, "pos_conv", pos_conv)
        # the transformer layers' fused inference forward (models/fused_layers.py)
        self._use_form(self.detector.set_layers_impl, "encoder_layers", encoder_layers)
        # their layer norms with the residual add / GELU as compiled kernels (fused_norms.py)
        self.detector.set_norm_kernels(compile_norms)
        self.device = next(detector.parameters()).device
        self.cuda = self.device.type == "cuda"
        # cast_weights: the whole model in ``dtype`` (any device); else autocast (CUDA only)
        self.input_dtype = dtype if cast_weights and dtype is not None else None
        if self.input_dtype is not None:
            self.detector.to(self.input_dtype)
        self.dtype = dtype if self.cuda and self.input_dtype is None else None
        self.window_samples = window_samples
        self.buckets = buckets_up_to(max_batch_size)
        self.use_buckets = self.cuda if use_buckets is None else use_buckets
        # graphs need a capture function: CUDA graphs on CUDA (tests pass eager_capture)
        self.capture = graph_capture or (cuda_capture if self.cuda else None)
        self.cuda_graphs = cuda_graphs and self.capture is not None
        # measured on an H200 with XLS-R 300M: graph replay is 2-4x faster up to batch 8-16
        # (launch-bound), but slower than eager at 32 and above (docs/benchmarks.md)
        self.graph_max_batch = graph_max_batch
        self._graphs: dict[int, tuple[Callable[[], None], torch.Tensor, torch.Tensor]] = {}
        self._graph_failed: set[int] = set()
        self.backend_graphs = backend_graphs and self.capture is not None
        self._backend_graphs: dict[tuple, tuple[Callable[[], None], torch.Tensor,
                                                 torch.Tensor] | None] = {}
        self._backend_fn: Forward = self.detector.backend
        # with buckets: only large ones compiled, each for its own shape (see the docstring)
        self.compile_min_batch = compile_min_batch if self.use_buckets else 1
        if compile_backend:
            self._backend_fn = (compiler or functools.partial(
                default_compiler, static=self.use_buckets))(self.detector.backend)
        self._pinned: dict[tuple[int, int], torch.Tensor] = {}
        self._parity = 0  # alternate staging buffers: a batch is staged while one runs
        # the samples [start, stop) of each window the last batch staged and copied
        self.staged_span = (0, window_samples)
        cache = (ConvFeatureCache(self.detector, window_samples, feature_cache_entries)
                 if feature_cache else None)
        self.cache = cache if cache is not None and cache.enabled else None
        # host-to-device copies of staged batches (see _device)
        self._copy_stream = (torch.cuda.Stream(self.device) if self.cuda and copy_stream
                             else None)
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    @staticmethod
    def _use_form(setter: Callable[[str], bool], setting: str, form: str) -> None:
        """Ask the model for a computation form; keep its native one where it has none."""
        try:
            setter(form)
        except BundleError as exc:
            log.warning(f"{setting} unavailable for this model; using the native form",
                        form=form, error=str(exc))
            setter("native")

    def bucket(self, n: int) -> int:
        """Smallest bucket holding ``n`` rows."""
        for b in self.buckets:
            if b >= n:
                return b
        return n

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is not None:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _buffer(self, kind: int, rows: int, cols: int) -> torch.Tensor:
        """A contiguous (rows, cols) float32 host buffer (pinned on CUDA) of this parity.

        One flat buffer per kind and parity, sized for the largest batch of the widest rows
        seen and viewed as (rows, cols): the host memory held grows neither with the number of
        distinct batch sizes nor with the widths of the tails that cached batches stage.
        """
        key = (kind, self._parity)
        buf = self._pinned.get(key)
        if buf is None or buf.numel() < rows * cols:
            widest = max(cols, self.window_samples) if kind == 0 else cols  # windows: whole
            size = max(rows, self.buckets[-1]) * widest
            buf = torch.zeros(size, dtype=torch.float32, pin_memory=self.cuda)
            self._pinned[key] = buf
        return buf[:rows * cols].view(rows, cols)

    def run(self, windows: np.ndarray | Sequence[np.ndarray],
            keys: Sequence[str | None] | None = None,
            ends: Sequence[int | None] | None = None) -> torch.Tensor:
        """Logits (n, n_logits) on the CPU for n float32 windows (see :meth:`launch`)."""
        return self.launch(windows, keys, ends).result()

    @torch.inference_mode()
    def launch(self, windows: np.ndarray | Sequence[np.ndarray],
               keys: Sequence[str | None] | None = None,
               ends: Sequence[int | None] | None = None) -> Launched:
        """Queue the forward pass of n float32 windows of ``window_samples``.

        ``windows`` is an (n, window_samples) array or a sequence of 1-D windows (written
        straight into the pinned staging buffer, no intermediate stack). ``keys``/``ends`` (per
        row: the stream and its sample count up to the window's end, or None) let the feature
        cache reuse each stream's previous window. On CUDA this returns once the work is
        queued (logits are copied back asynchronously), so the caller can stage the next
        batch while this one runs; at most two launches may be pending at a time.
        """
        n = len(windows)
        rows = self.bucket(n) if self.use_buckets else n
        if any(len(w) != self.window_samples for w in windows):
            x = torch.from_numpy(np.stack(windows).astype(np.float32, copy=False))
            return Launched(n, self._eager(self._device(x))[:n].float().cpu())
        plans = self._cache_plans(rows, keys, ends)
        # every row reuses its previous window: stage only the tails the encoder reads
        span = self.cache.tail_span(plans) if plans is not None else None  # type: ignore[union-attr]
        start, stop = self.staged_span = span or (0, self.window_samples)
        host = self.stage(windows, rows, start, stop, zero_padding=plans is None)
        if plans is not None:
            return self._collect(n, self._forward_cached(host[:n], rows, keys, ends, plans,
                                                         start))
        return self._collect(n, self._forward(host, n, rows))

    def stage(self, windows: np.ndarray | Sequence[np.ndarray], rows: int, start: int,
              stop: int, *, zero_padding: bool = True) -> torch.Tensor:
        """Samples ``[start, stop)`` of each window written into the next staging buffer.

        Returns the (rows, stop - start) host tensor (pinned on CUDA); rows beyond the
        windows are zeroed when ``zero_padding``.
        """
        self._parity ^= 1
        host = self._buffer(0, rows, stop - start)
        staged = host.numpy()
        for i, w in enumerate(windows):
            staged[i] = w[start:stop]
        if rows > len(windows) and zero_padding:
            host[len(windows):].zero_()
        return host

    def _cache_plans(self, rows: int, keys: Sequence[str | None] | None,
                     ends: Sequence[int | None] | None) -> list[tuple[int, int] | None] | None:
        """The feature cache's per-row plans, or None when this batch does not use the cache.

        Batches small enough for a whole-model graph replay it instead (launch-bound sizes).
        """
        if (self.cache is None or keys is None or ends is None
                or all(k is None for k in keys)
                or (self.cuda_graphs and rows <= self.graph_max_batch)):
            return None
        return self.cache.plan(keys, ends)

    def _forward_cached(self, host: torch.Tensor, rows: int, keys: Sequence[str | None],
                        ends: Sequence[int | None], plans: list[tuple[int, int] | None],
                        offset: int) -> torch.Tensor:
        """Device logits of a staged batch through the feature cache.

        ``host`` holds the real rows, each window's samples from ``offset`` on.
        """
        assert self.cache is not None
        x = self._device(host)
        with self._autocast():
            conv = self.cache.features(x, keys, ends, plans=plans, offset=offset)
            feats = self.detector.frontend.forward_from_conv(
                _pad_rows(conv, rows) if self.pad_frontend else conv)
        return self._backend(_pad_rows(feats, rows))

    def _forward(self, host: torch.Tensor, n: int, rows: int) -> torch.Tensor:
        """Device logits of the staged batch (rows >= n; the first n are real)."""
        if self.cuda_graphs and rows <= self.graph_max_batch and rows not in self._graph_failed:
            graph = self._graphs.get(rows) or self._capture(rows)
            if graph is not None:
                replay, static_in, static_out = graph
                static_in.copy_(self._device(host))  # cast on the device, not the host
                replay()
                return static_out
        x = self._device(host if self.pad_frontend else host[:n])
        with self._autocast():
            feats = self.detector.frontend(x)
        return self._backend(_pad_rows(feats, rows))

    @property
    def pad_frontend(self) -> bool:
        """Whether the eager front-end runs on the whole bucket (padding rows included).

        Padding keeps the shapes that reach cuDNN few, so that its per-shape autotuning
        (``cudnn.benchmark``) happens once per bucket; the SSL front-end with the GEMM conv
        encoder and the FFT positional convolution uses no cuDNN convolution, so it runs on the
        real rows only (a batch of 150 costs 150 rows, not 256) and only the back-end, replayed
        from graphs per bucket, sees the padded shape.
        """
        fe = self.detector.frontend
        return self.cuda and not (getattr(fe, "conv_impl", None) == "gemm"
                                  and getattr(fe, "pos_conv_impl", None) == "fft")

    def _collect(self, n: int, logits: torch.Tensor) -> Launched:
        """Copy the first n rows of device logits back (asynchronously on CUDA)."""
        if not self.cuda:  # a copy: graph outputs are static buffers reused by the next run
            return Launched(n, logits[:n].float().clone())
        out = self._buffer(1, logits.shape[0], logits.shape[1])
        out[:n].copy_(logits[:n], non_blocking=True)  # before the next launch reuses outputs
        done = torch.cuda.Event()
        done.record()
        return Launched(n, out, done)

    def _device(self, host: torch.Tensor) -> torch.Tensor:
        """A host batch on the device, in the model's dtype when its weights were cast.

        On CUDA the copy runs on a stream of its own, so it overlaps the previous batch's
        kernels instead of queuing behind them; the compute stream waits for it, and the
        device tensor is marked as used there (the allocator then keeps its memory until the
        batch's kernels are done).
        """
        if self._copy_stream is None:
            x = host.to(self.device, non_blocking=True)
        else:
            compute = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(self._copy_stream):
                x = host.to(self.device, non_blocking=True)
            compute.wait_stream(self._copy_stream)
            x.record_stream(compute)
        return x if self.input_dtype is None else x.to(self.input_dtype)

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._run_backend(self.detector.frontend(x))

    @property
    def norms_compiled(self) -> bool:
        """True while the front-end's layer norms run as compiled kernels."""
        kernels = getattr(self.detector.frontend, "norm_kernels", None)
        return kernels is not None and kernels.active

    @property
    def backend_compiled(self) -> bool:
        """True while the back-end runs compiled (False when off or after a failure)."""
        return self._backend_fn is not self.detector.backend

    def _run_backend(self, feats: torch.Tensor) -> torch.Tensor:
        """The back-end (compiled when asked and possible) on front-end features."""
        fn = self._backend_fn
        if fn is self.detector.backend or feats.shape[0] < self.compile_min_batch:
            return self.detector.backend(feats)
        try:
            return fn(feats)
        except Exception as exc:  # compilation failed (no compiler, unsupported op): eager
            log.warning("compiled back-end failed; running it eagerly", error=repr(exc))
            self._backend_fn = self.detector.backend
            return self.detector.backend(feats)

    def _backend(self, feats: torch.Tensor) -> torch.Tensor:
        """The back-end's logits for front-end features, replayed from a graph where possible."""
        if not self.backend_graphs:
            with self._autocast():
                return self._run_backend(feats)
        shape = (tuple(feats.shape), feats.dtype)
        if shape not in self._backend_graphs:
            self._backend_graphs[shape] = self._capture_backend(feats)
        graph = self._backend_graphs[shape]
        if graph is None:
            with self._autocast():
                return self._run_backend(feats)
        replay, static_in, static_out = graph
        static_in.copy_(feats)
        replay()
        return static_out

    def _capture_backend(self, feats: torch.Tensor) -> tuple[Callable[[], None], torch.Tensor,
                                                              torch.Tensor] | None:
        def run(x: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self._run_backend(x)

        static_in = feats.clone()
        try:
            assert self.capture is not None
            replay, static_out = self.capture(run, static_in)
        except Exception as exc:  # fall back to the eager back-end for this shape
            log.warning("back-end CUDA graph capture failed; running it eagerly",
                        shape=list(feats.shape), error=repr(exc))
            return None
        log.info("captured back-end CUDA graph", shape=list(feats.shape))
        return replay, static_in, static_out

    def _capture(self, rows: int) -> tuple[Callable[[], None], torch.Tensor,
                                           torch.Tensor] | None:
        try:
            assert self.capture is not None
            static_in = torch.zeros(rows, self.window_samples, device=self.device,
                                    dtype=self.input_dtype or torch.float32)
            replay, static_out = self.capture(self._eager, static_in)
        except Exception as exc:  # some models cannot be captured: fall back to eager
            self._graph_failed.add(rows)
            log.warning("CUDA graph capture failed; running eagerly", bucket=rows,
                        error=repr(exc))
            return None
        self._graphs[rows] = (replay, static_in, static_out)
        log.info("captured CUDA graph", bucket=rows)
        return self._graphs[rows]

    def warmup(self) -> None:
        """Capture (or at least run) every bucket once, before calls arrive.

        Without buckets (the CPU) nothing needs capturing, but compiled parts compile at their
        first shapes (the back-end statically, then at a second batch size with a dynamic one):
        two batch sizes run here so that neither compilation lands on a call's first windows.
        """
        for b in self.buckets if self.use_buckets else []:
            self.run(np.zeros((b, self.window_samples), dtype=np.float32))
        if not self.use_buckets and (self.backend_compiled or self.norms_compiled):
            for n in (1, 2):
                self.run(np.zeros((n, self.window_samples), dtype=np.float32))
        if self.cuda and not self.pad_frontend:
            self.warm_positional_conv(range(1, self.buckets[-1] + 1))

    @torch.inference_mode()
    def warm_positional_conv(self, batch_sizes: Sequence[int]) -> int:
        """Run the FFT positional convolution once per batch size; returns how many ran.

        A front-end that runs on a batch's real rows sees every batch size, and cuFFT builds a
        plan for each new one (PyTorch caches them); building them here keeps that one-time
        cost out of the first calls' latency.
        """
        fe = self.detector.frontend
        conv = fe.positional_conv() if hasattr(fe, "positional_conv") else None
        if conv is None or getattr(fe, "pos_conv_impl", None) != "fft":
            return 0
        window = torch.zeros(1, self.window_samples, device=self.device,
                             dtype=self.input_dtype or torch.float32)
        with self._autocast():
            frames = fe.conv_features(window).shape[-1]
            for b in batch_sizes:
                conv(torch.zeros(b, conv.in_channels, frames, device=self.device,
                                 dtype=window.dtype))
        return len(batch_sizes)
