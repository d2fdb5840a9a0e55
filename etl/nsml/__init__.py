"""Talking to the NSML API: the NCP signature v2 signer (``auth``), the client with its retry
policy (``client``), the pacing of requests and the API quota (``throttle``), the watchdog that
bounds a whole response (``watchdog``) and the run list (``discovery``)."""
