"""Audio codecs behind one registry: G.711, G.722 and Opus."""
