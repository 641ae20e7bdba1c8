"""Enhanced Chat payloads shaped as MESSAGING.md shows them (values adapted from its Appendix A1).

Every builder adds fields bridged does not read (as real payloads carry), so that the
decoders are tested for tolerance as well as for what they read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bridged.salesforce.messaging.sse import SseEvent

CONV = "d10c295f-25c1-42ac-b762-32ac80f177b7"
OTHER_CONV = "0b9e5b1e-7a6c-4d0a-9f51-3c1f1e2d3a4b"
ORG_18 = "00DNy0000000HgnMAE"
ORG_15 = "00DNy0000000Hgn"
CHANNEL = "e6dd2827-dada-49a1-ab44-44652af0cce0"
T0 = 1_740_057_770.0  # the real token's iat (2.2)

SYSTEM = {"role": "System", "appType": "conversation", "subject": "005Ny0000000DZz",
          "clientIdentifier": ""}
CHATBOT = {"role": "Chatbot", "appType": "chatbot", "subject": "0XxNy00000000RR",
           "clientIdentifier": ""}
END_USER = {"role": "EndUser", "appType": "iamessage",
            "subject": "v2/iamessage/UNAUTH/NA/uid:d230a50f-ef6b-4d4b-ada8-4661d69c7be3",
            "clientIdentifier": ""}


def agent(subject: str = "005Ny00000AgntA") -> dict[str, str]:
    """An Agent sender (its appType and subject form are UNCONFIRMED, 3.4)."""
    return {"role": "Agent", "appType": "agent", "subject": subject, "clientIdentifier": ""}


SUPERVISOR = {"role": "Supervisor", "appType": "agent", "subject": "005Ny00000Suprv",
              "clientIdentifier": ""}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(exp: float | None = T0 + 21_600, org_id: str = ORG_15, **extra: Any) -> str:
    """A JWT-shaped token with the claims of the real one (2.2); the signature is junk."""
    claims: dict[str, Any] = {
        "sub": "v2/iamessage/UNAUTH/NA/uid:d230a50f-ef6b-4d4b-ada8-4661d69c7be3",
        "clientId": "v2/iamessage/UNAUTH/NA", "orgId": org_id, "platform": "Web",
        "capabilitiesVersion": "1", "esDeploymentType": "API", "apiVersion": "v2",
        "aud": "USER", "iss": "iamessage", "scope": "public", "iat": int(T0), **extra}
    if exp is not None:
        claims["exp"] = int(exp)
    header = {"kid": "3a4c9b", "typ": "JWT", "alg": "RS256"}
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()),
                     b64url(b"not-a-signature")])


TOKEN = jwt()


def token_body(token: str = TOKEN, last_event_id: Any = "1739971138000-0000",
               **overrides: Any) -> bytes:
    """The 200 body of the token request (2.1), with the context the sample stores."""
    body: dict[str, Any] = {
        "accessToken": token,
        "lastEventId": last_event_id,
        "context": {
            "configuration": {
                "embeddedServiceConfig": {
                    "name": "Bridged_API", "deploymentType": "API", "isEnabled": True,
                    "embeddedServiceMessagingChannel": {
                        "channelAddressIdentifier": CHANNEL, "authMode": "UnAuth"},
                    "forms": [{"displayContext": "Conversation", "formType": "PreChat",
                               "formFields": [
                                   {"name": "_firstName", "order": 1, "type": "Text",
                                    "required": False, "maxLength": 40, "isHidden": False},
                                   {"name": "BotHistory", "order": 2, "type": "Text",
                                    "required": False, "maxLength": 32000, "isHidden": True,
                                    "choiceListId": None}]}],
                    "choiceListConfig": {"choiceList": []},
                    "attachments": {"endUserToAgent": True, "maxFileSize": 5},
                    "transcript": {"allowTranscriptDownload": False},
                },
                "timestamp": 1740057770123,
            },
            "deviceId": "8b0a3d0e-54c4-4d3c-9b8d-1f0f6c2f3f11",
            "endUser": {"appType": "iamessage", "role": "EndUser",
                        "subject": "v2/iamessage/UNAUTH/NA/uid:d230a50f"},
        },
    }
    body.update(overrides)
    if last_event_id is None:
        del body["lastEventId"]
    return json.dumps(body).encode()


def text_message(text: str, entry_id: str) -> dict[str, Any]:
    """The entryPayload of a text message, as A1 has it."""
    return {"entryType": "Message", "id": entry_id,
            "abstractMessage": {"messageType": "StaticContentMessage", "inReplyToMessageId": None,
                                "id": entry_id, "references": None,
                                "staticContent": {"formatType": "Text", "text": text}},
            "messageReason": None}


def participant_changed(operation: str, participant: dict[str, str], name: str,
                        entry_id: str) -> dict[str, Any]:
    return {"entryType": "ParticipantChanged", "id": entry_id,
            "entries": [{"operation": operation, "participant": participant,
                         "displayName": name, "menuMetadata": None}]}


def routing_result(entry_id: str, *, routing_type: str = "Initial", failure_type: str = "None",
                   failure_reason: str = "", ewt: int = -1, ewt_requested: bool = True,
                   error_messages: list[Any] | None = None) -> dict[str, Any]:
    """A RoutingResult payload, as the real one in A1."""
    return {"entryType": "RoutingResult", "id": entry_id, "recordId": "0MwNy00000NfUJR",
            "errorMessages": error_messages or [], "pendingServiceRoutingId": "0JRNy00000Ma1Lu",
            "routingType": routing_type,
            "estimatedWaitTime": {"estimatedWaitTimeInSeconds": ewt,
                                  "isEWTRequested": ewt_requested},
            "failureReason": failure_reason, "failureType": failure_type,
            "isExternallyRouted": False,
            "routingConfigurationDetails": {"routingConfigurationType": "QueueRoutingType",
                                            "queueId": "00GNy000000O12z"}}


def session_status(status: str, entry_id: str) -> dict[str, Any]:
    """SessionStatusChanged: field names OBSERVED only (3.5)."""
    return {"entryType": "SessionStatusChanged", "id": entry_id, "sessionStatus": status,
            "previousSessionStatus": "Active", "sessionEndedByRole": "Agent"}


def entry(payload: dict[str, Any] | None, *, sender: dict[str, str], display: str,
          entry_id: str, ts: int, entry_type: str | None = None,
          as_string: bool = True) -> dict[str, Any]:
    """A conversationEntry: ``entryPayload`` as a JSON string (stream) or object (list)."""
    kind = entry_type or (payload or {}).get("entryType", "")
    out: dict[str, Any] = {
        "senderDisplayName": display, "identifier": entry_id, "entryType": kind,
        "sender": sender, "transcriptedTimestamp": ts, "clientTimestamp": ts - 141,
        "relatedRecords": [], "isNew": True}
    if payload is not None:
        out["entryPayload"] = json.dumps(payload) if as_string else payload
    return out


def sse_data(conversation_entry: dict[str, Any] | None, conversation_id: str = CONV) -> str:
    data: dict[str, Any] = {"channelPlatformKey": "<opaque>", "channelType": "embedded_messaging",
                            "channelAddressIdentifier": CHANNEL,
                            "conversationId": conversation_id}
    if conversation_entry is not None:
        data["conversationEntry"] = conversation_entry
    return json.dumps(data)


def sse(event: str, conversation_entry: dict[str, Any] | None, *, event_id: str,
        conversation_id: str = CONV) -> SseEvent:
    return SseEvent(event=event, data=sse_data(conversation_entry, conversation_id), id=event_id)


def entries_body(*entries: dict[str, Any]) -> bytes:
    """The list-entries body (2.9): entries with object payloads, newest first."""
    return json.dumps({"conversationEntries": list(entries)}).encode()
