"""KineticsSound raw layout -> samples for ``rlmba prepare kinetics_sound`` (visual + audio).

KineticsSound (Arandjelovic & Zisserman, 2017) is the 31 Kinetics-400 action classes that can
be heard (playing instruments, singing, tapping pen, ...), about 19k 10-second YouTube clips in
the version RL-MBA (arXiv 2603.25107) and OGM-GE use; the audio modality dominates the visual
one, the imbalance that modality balancing addresses. The accepted directory layout (split
lists, ``frames/<id>/frame_*.jpg``, ``audio/<id>.wav``) is the one documented in
:mod:`rlmba_env.data.audiovisual`, which both audio-visual datasets share.
"""

from __future__ import annotations

from rlmba_env.data.audiovisual import list_audiovisual

NAME = "kinetics_sound"
N_CLASSES = 31


def list_kinetics_sound(raw):
    """List KineticsSound's clips under ``raw`` (see :mod:`rlmba_env.data.audiovisual`)."""
    return list_audiovisual(raw, name=NAME, n_classes=N_CLASSES)
