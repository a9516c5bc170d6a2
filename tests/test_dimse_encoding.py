"""The direct command set and File Meta encoders write what pydicom writes."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import dimse_primitives, dsutils
from pynetdicom.dimse_messages import (
    C_FIND_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    DIMSEMessage,
)
from pynetdicom.dsutils import create_file_meta

from dicomweb.dimse import encoding

encode = encoding.command_set_encoder(dsutils.encode)
CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.10.1311.77.1.5000001.1.1"


def messages():
    store = dimse_primitives.C_STORE()
    store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = 7, CT, SOP
    store.Priority, store.MoveOriginatorApplicationEntityTitle = 2, "MOVER"
    store.MoveOriginatorMessageID = 3
    request = C_STORE_RQ()
    request.primitive_to_message(store)
    response = dimse_primitives.C_STORE()
    response.MessageIDBeingRespondedTo, response.Status = 7, 0xA900
    response.AffectedSOPClassUID, response.AffectedSOPInstanceUID = CT, SOP + "1"
    response.ErrorComment = "odd comment"
    store_rsp = C_STORE_RSP()
    store_rsp.primitive_to_message(response)
    move = dimse_primitives.C_MOVE()
    move.MessageIDBeingRespondedTo, move.Status = 1, 0xFF00
    move.NumberOfRemainingSuboperations, move.NumberOfCompletedSuboperations = 4, 1
    move.NumberOfFailedSuboperations, move.NumberOfWarningSuboperations = 0, 0
    move_rsp = C_MOVE_RSP()
    move_rsp.primitive_to_message(move)
    find = dimse_primitives.C_FIND()
    find.MessageIDBeingRespondedTo, find.Status = 2, 0xA900
    find.OffendingElement = [0x00080020]
    find_rsp = C_FIND_RSP()
    find_rsp.primitive_to_message(find)
    return [request, store_rsp, move_rsp, find_rsp]


@pytest.mark.parametrize("message", messages(), ids=lambda m: type(m).__name__)
def test_command_sets_as_pydicom_writes_them(message) -> None:
    assert encode(message.command_set, True, True) == dsutils.encode(message.command_set, True,
                                                                     True)


def test_other_datasets_go_through_pydicom() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    assert encode(ds, True, True) == dsutils.encode(ds, True, True)
    assert encode(ds, False, True) == dsutils.encode(ds, False, True)


@pytest.mark.parametrize("sop", [SOP, SOP + "1"])  # even and odd lengths
def test_file_meta_as_pydicom_writes_it(sop: str) -> None:
    expected = BytesIO()
    write_file_meta_info(expected, create_file_meta(
        sop_class_uid=CT, sop_instance_uid=sop, transfer_syntax="1.2.840.10008.1.2.1",
        implementation_uid="1.2.826.0.1.3680043.10.1452.1",
        implementation_version="DICOMWEB_PY_01"))
    ours = encoding.file_meta(sop_class_uid=CT, sop_instance_uid=sop,
                              transfer_syntax="1.2.840.10008.1.2.1",
                              implementation_uid="1.2.826.0.1.3680043.10.1452.1",
                              implementation_version="DICOMWEB_PY_01")
    assert ours == expected.getvalue()


def store_response(**fields) -> dimse_primitives.C_STORE:
    response = dimse_primitives.C_STORE()
    response.MessageIDBeingRespondedTo, response.Status = 7, fields.pop("status", 0x0000)
    for name, value in fields.items():
        setattr(response, name, value)
    return response


@pytest.mark.parametrize("response", [
    store_response(AffectedSOPClassUID=CT, AffectedSOPInstanceUID=SOP),
    store_response(AffectedSOPClassUID=CT, AffectedSOPInstanceUID=SOP + "1", status=0xA900,
                   ErrorComment="SOP Class UID 1.2 is not the command's"),
    store_response(AffectedSOPClassUID=CT, AffectedSOPInstanceUID=SOP, status=0xB000,
                   ErrorComment="even", OffendingElement=[0x00100010]),
    store_response(status=0xC000),
], ids=["success", "failure-comment", "warning-offending", "no-uids"])
def test_store_responses_as_pynetdicom_encodes_them(response) -> None:
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    assert encoding.store_response_command(response) == dsutils.encode(message.command_set,
                                                                        True, True)


def test_store_request_read_as_pynetdicom_reads_it() -> None:
    request = messages()[0]
    data = BytesIO(dsutils.encode(request.command_set, True, True))
    command = encoding.command_set_decoder(dsutils.decode)(data, True, True)
    assert isinstance(command, encoding.StoreCommand)
    ours = C_STORE_RQ()
    ours.command_set, ours.context_id = command, 3
    theirs = C_STORE_RQ()
    theirs.command_set, theirs.context_id = dsutils.decode(data, True, True), 3
    mine = encoding.store_request_primitive(ours, dimse_primitives.C_STORE())
    expected = theirs.message_to_primitive()
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(mine, name) == getattr(expected, name), name
    assert mine._context_id == expected._context_id == 3


@pytest.mark.parametrize("message", messages()[1:], ids=lambda m: type(m).__name__)
def test_other_command_sets_are_read_by_pydicom(message) -> None:
    data = BytesIO(dsutils.encode(message.command_set, True, True))
    command = encoding.command_set_decoder(dsutils.decode)(data, True, True)
    assert isinstance(command, Dataset)
    assert command == message.command_set


def test_a_store_request_with_an_unexpected_element_is_read_by_pydicom() -> None:
    request = messages()[0]
    command_set = Dataset()
    command_set.update(request.command_set)
    command_set.add_new(0x00000600, "AE", "ODD")  # Move Destination: not a C-STORE field
    data = BytesIO(dsutils.encode(command_set, True, True))
    assert isinstance(encoding.command_set_decoder(dsutils.decode)(data, True, True), Dataset)


def test_received_messages_start_without_a_command_set_and_decode_as_pynetdicoms() -> None:
    # The same attributes as pynetdicom's, but the empty Dataset (made if asked for).
    assert set(vars(encoding.ReceivedMessage())) == set(vars(DIMSEMessage())) - {"command_set"}
    assert encoding.ReceivedMessage().command_set == Dataset()
    for message in messages():
        theirs, ours = DIMSEMessage(), encoding.ReceivedMessage()
        for pdata in message.encode_msg(1, 16382):
            done = [theirs.decode_msg(pdata), ours.decode_msg(pdata)]
        assert done == [True, True]
        assert type(ours) is type(theirs) is type(message)
        assert comparable(ours.command_set) == comparable(theirs.command_set)
        assert ours.context_id == theirs.context_id == 1


def comparable(command_set: object) -> object:
    """A command set as compared: once `hooks.install` ran (any DIMSE test before this one),
    both decoders give a C-STORE-RQ as a StoreCommand, which compares by its attributes."""
    return command_set if isinstance(command_set, Dataset) else vars(command_set)
