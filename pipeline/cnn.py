"""A small convolutional network's forward pass in numpy: what the reliability model runs on each DiaSource.

The network is a few ``conv (valid, stride 1) -> ReLU -> max-pool`` layers on ``(n, c, h, w)`` images, whose
output (flattened in channel, row, column order, as ``torch.flatten`` of an NCHW tensor) is joined by side
features and goes through dense layers (ReLU between them, none after the last), giving one logit per image.
It is trained elsewhere (``bench/train_reliability.py``, PyTorch); here it only runs, vectorised: each
convolution is a :func:`numpy.lib.stride_tricks.sliding_window_view` of the images contracted with the
kernels by :func:`numpy.tensordot` (one matrix product), in float32.

The weights travel as a mapping of named arrays (an ``.npz`` file's contents, read by the shell):
``conv<i>_w`` ``(c_out, c_in, k, k)``, ``conv<i>_b`` ``(c_out,)``, ``conv<i>_pool`` (a scalar: the pooling
window, 1 for none), then ``dense<i>_w`` ``(n_in, n_out)`` and ``dense<i>_b`` ``(n_out,)``, numbered from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BATCH = 256
"""Images per batch of the forward pass: bounds the window copy of the first convolution (a few tens of MB)."""


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """A valid convolution (stride 1), then ReLU, then a ``pool x pool`` max-pool (floor, as PyTorch's)."""

    weight: np.ndarray
    bias: np.ndarray
    pool: int

    @property
    def size(self) -> int:
        return int(self.weight.size + self.bias.size)


@dataclass(frozen=True, eq=False)
class ConvNet:
    """The network: convolution layers, then dense layers on the flattened maps and the side features.

    Attributes
    ----------
    conv : tuple of ConvLayer
    dense : tuple of (weight, bias)
        ``(n_in, n_out)`` and ``(n_out,)`` float32; the last has ``n_out == 1``.
    input_shape : tuple
        ``(c, h, w)`` of the images it takes.
    n_side : int
        Side features joined to the flattened maps.
    """

    conv: tuple[ConvLayer, ...]
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]
    input_shape: tuple[int, int, int]
    n_side: int

    @property
    def n_parameters(self) -> int:
        """Weights and biases, all layers."""
        return sum(layer.size for layer in self.conv) + sum(w.size + b.size for w, b in self.dense)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], input_shape: tuple[int, int, int]) -> ConvNet:
        """The network from its named arrays (see the module's notes), checked against ``input_shape``.

        Raises
        ------
        ValueError
            A layer missing, shapes that do not chain, or weights that are not finite.
        """
        conv, dense = [], []
        c, h, w = input_shape
        while f"conv{len(conv)}_w" in arrays:
            i = len(conv)
            weight = np.asarray(arrays[f"conv{i}_w"], np.float32)
            bias = np.asarray(arrays[f"conv{i}_b"], np.float32)
            pool = int(np.asarray(arrays.get(f"conv{i}_pool", 1)))
            if weight.ndim != 4 or weight.shape[1] != c or weight.shape[2] != weight.shape[3] \
                    or bias.shape != (weight.shape[0],) or pool < 1:
                raise ValueError(f"conv{i}: weight {weight.shape}, bias {bias.shape}, pool {pool} do not fit "
                                 f"{c}-channel input")
            c, h, w = weight.shape[0], (h - weight.shape[2] + 1) // pool, (w - weight.shape[3] + 1) // pool
            if h < 1 or w < 1:
                raise ValueError(f"conv{i} leaves no pixel of a {input_shape} input")
            conv.append(ConvLayer(weight, bias, pool))
        n_in = c * h * w
        n_side = -1
        while f"dense{len(dense)}_w" in arrays:
            i = len(dense)
            weight = np.asarray(arrays[f"dense{i}_w"], np.float32)
            bias = np.asarray(arrays[f"dense{i}_b"], np.float32)
            if i == 0:
                n_side = weight.shape[0] - n_in
            if weight.ndim != 2 or bias.shape != (weight.shape[1],) or (i and weight.shape[0] != n_in) \
                    or n_side < 0:
                raise ValueError(f"dense{i}: weight {weight.shape}, bias {bias.shape} do not follow {n_in} inputs")
            n_in = weight.shape[1]
            dense.append((weight, bias))
        if not dense or n_in != 1:
            raise ValueError(f"the network needs dense layers ending in one output, got {len(dense)} ending in {n_in}")
        net = cls(tuple(conv), tuple(dense), tuple(int(v) for v in input_shape), int(n_side))
        if not all(np.isfinite(a).all() for layer in net.conv for a in (layer.weight, layer.bias)) \
                or not all(np.isfinite(a).all() for pair in net.dense for a in pair):
            raise ValueError("the network's weights must be finite")
        return net

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The named arrays :meth:`from_arrays` reads."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.conv):
            out[f"conv{i}_w"], out[f"conv{i}_b"], out[f"conv{i}_pool"] = layer.weight, layer.bias, np.int64(layer.pool)
        for i, (weight, bias) in enumerate(self.dense):
            out[f"dense{i}_w"], out[f"dense{i}_b"] = weight, bias
        return out

    def logits(self, images: np.ndarray, side: np.ndarray) -> np.ndarray:
        """One logit per image.

        Parameters
        ----------
        images : numpy.ndarray
            ``(n, c, h, w)``, the network's ``input_shape``.
        side : numpy.ndarray
            ``(n, n_side)`` side features.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float32.
        """
        images = np.asarray(images, np.float32)
        side = np.asarray(side, np.float32).reshape(len(images), self.n_side)
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images of shape {images.shape[1:]}, the network takes {self.input_shape}")
        out = np.empty(len(images), np.float32)
        for start in range(0, len(images), BATCH):
            out[start:start + BATCH] = self._logits(images[start:start + BATCH], side[start:start + BATCH])
        return out

    def _logits(self, images: np.ndarray, side: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # channels last: (n, h, w, c)
        for layer in self.conv:
            k = layer.weight.shape[2]
            windows = sliding_window_view(x, (k, k), axis=(1, 2))  # (n, h', w', c, k, k)
            x = np.tensordot(windows, layer.weight, axes=([3, 4, 5], [1, 2, 3])) + layer.bias
            np.maximum(x, 0.0, out=x)
            if layer.pool > 1:
                n, h, w, c = x.shape
                p = layer.pool
                x = x[:, : h // p * p, : w // p * p].reshape(n, h // p, p, w // p, p, c).max(axis=(2, 4))
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # channel, row, column: torch's flatten of NCHW
        x = np.concatenate([flat, side], axis=1)
        for i, (weight, bias) in enumerate(self.dense):
            x = x @ weight + bias
            if i < len(self.dense) - 1:
                np.maximum(x, 0.0, out=x)
        return x[:, 0]


__all__ = ["BATCH", "ConvLayer", "ConvNet"]
