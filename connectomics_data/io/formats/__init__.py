"""On-disk volume formats, one module each, all behind :class:`~connectomics_data.io.base.Volume`."""
