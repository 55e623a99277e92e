"""``get_source``: a data source by name (``synthetic``, ``tfds:NAME``, ``tfrecord:DIR``, ``folder:DIR``)."""
from __future__ import annotations

from effnet_tf.data.folder_source import FolderSource
from effnet_tf.data.sources import Source
from effnet_tf.data.synthetic import SyntheticSource
from effnet_tf.data.tfds_source import TFDSSource
from effnet_tf.data.tfrecord_source import TFRecordSource

#: ``kind`` of a spec ``kind:argument`` -> the source class (synthetic takes no argument).
SOURCES = {"synthetic": SyntheticSource, "tfds": TFDSSource, "tfrecord": TFRecordSource, "folder": FolderSource}


def get_source(spec: str, **kwargs) -> Source:
    """Returns the source named by ``spec``.

    ``spec`` is one of:

    * ``"synthetic"``: the built-in procedurally drawn K-class task (no files needed);
      keyword arguments go to :class:`~effnet_tf.data.synthetic.SyntheticSource`.
    * ``"tfds:NAME"`` (``NAME`` may carry a version, ``imagenet2012:5.1.0``): a TFDS dataset;
      ``data_dir=`` (local or ``gs://``) selects where it is prepared.
    * ``"tfrecord:DIR"``: ImageNet-style TFRecord shards in ``DIR`` (``train_pattern``,
      ``validation_pattern``, ``num_classes``, ``label_offset``).
    * ``"folder:DIR"``: one sub-folder of image files per class (optionally below
      ``train/`` and ``validation/``).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"get_source: spec must be a non-empty string, got {spec!r}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "synthetic":
        if arg:
            raise ValueError(f"get_source: 'synthetic' takes keyword arguments, not {spec!r}")
        return SyntheticSource(**kwargs)
    if kind in SOURCES and not arg:
        raise ValueError(f"get_source: {spec!r} needs a name or path after '{kind}:'")
    if kind in SOURCES:
        return SOURCES[kind](arg, **kwargs)
    raise ValueError(
        f"get_source: unknown source {spec!r}; expected 'synthetic', 'tfds:NAME', "
        "'tfrecord:DIR' or 'folder:DIR'")
