"""VGGSound raw layout -> samples for ``rlmba prepare vggsound`` (visual + audio).

VGGSound (Chen et al., ICASSP 2020): about 200k 10-second YouTube clips in 309 sound classes,
listed in the official ``vggsound.csv`` (``ytid,start,label,split``), which this reader takes
as is. The accepted directory layout (split lists, ``frames/<id>/frame_*.jpg``,
``audio/<id>.wav``) is the one documented in :mod:`rlmba_env.data.audiovisual`, which both
audio-visual datasets share.
"""

from __future__ import annotations

from rlmba_env.data.audiovisual import list_audiovisual

NAME = "vggsound"
N_CLASSES = 309


def list_vggsound(raw):
    """List VGGSound's clips under ``raw`` (see :mod:`rlmba_env.data.audiovisual`)."""
    return list_audiovisual(raw, name=NAME, n_classes=N_CLASSES)
