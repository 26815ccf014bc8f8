"""Lossless compression with a trained model: bits-back coding (``bitsback``), the file it writes (``container``) and
the standard compressors it is compared with (``baselines``)."""
