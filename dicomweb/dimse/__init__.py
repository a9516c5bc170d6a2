"""DIMSE beside DICOMweb: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment SCPs
with pynetdicom, on the same store, ingest, matching engine and access rules.

`dicomweb serve --dimse-port PORT` runs it in its own process (dimse/process.py).
"""
