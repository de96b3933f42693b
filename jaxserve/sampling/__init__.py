"""jaxserve.sampling"""
