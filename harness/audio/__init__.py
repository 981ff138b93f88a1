"""Audio primitives shared by callers, fakes and the reference runtime: G.711, formats, the phrase codec."""
