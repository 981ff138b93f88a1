"""Twilio as a caller sees it: the voice webhook and TwiML (:mod:`harness.twilio.webhook`) and the caller's
side of a bidirectional Media Stream (:mod:`harness.twilio.media_streams`). Both are sans-I/O cores; adapters
do the I/O."""
