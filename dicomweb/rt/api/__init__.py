"""HTTP handlers of the RT extension, one module per resource family (the route table is
:mod:`dicomweb.rt.routes`)."""
