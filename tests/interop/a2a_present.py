"""Send one A2A message of data parts with the real a2a-sdk client (protocol 1.0, JSON-RPC).

Reads from stdin:
  {"base_url": "http://127.0.0.1:PORT", "headers": {"Authorization": "DPoP ...", "DPoP": "..."},
   "data_parts": [{...}, ...], "message_id": "optional"}
Prints to stdout one JSON object:
  {"card": {...}, "kind": "message"|"task"|"error", "data_parts": [...],
   "task_state": "TASK_STATE_..." (task only), "error": {"code": N, "message": "..."} (error only)}
Exits 0 on any well-formed answer (message, task or JSON-RPC error); 1 with a reason on stderr otherwise.
"""

import asyncio
import json
import re
import sys
import uuid

import httpx
from google.protobuf.json_format import MessageToDict

from a2a.client import A2ACardResolver, A2AClientError, ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, new_data_part
from a2a.types import Message, Role, SendMessageRequest, TaskState
from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP, A2AError

# The JSON-RPC transport turns an error whose code it does not know into this message.
UNMAPPED_RPC_ERROR = re.compile(r"JSON-RPC Error (-?\d+): (.*)", re.S)


def rpc_error(exc: A2AError) -> dict | None:
    """The {code, message} of a JSON-RPC error reply, or None if exc is not one."""
    if type(exc) in JSON_RPC_ERROR_CODE_MAP:  # a standard or A2A code, raised as its own class
        return {"code": JSON_RPC_ERROR_CODE_MAP[type(exc)], "message": exc.message}
    match = UNMAPPED_RPC_ERROR.fullmatch(exc.message) if isinstance(exc, A2AClientError) else None
    return {"code": int(match[1]), "message": match[2]} if match else None


async def present(request: dict) -> dict:
    async with httpx.AsyncClient(timeout=30) as http:
        # The factory adds `A2A-Version: 1.0` to the shared client's default headers.
        factory = ClientFactory(ClientConfig(httpx_client=http, streaming=False))
        card = await A2ACardResolver(http, request["base_url"]).get_agent_card()
        out = {"card": MessageToDict(card)}
        message = Message(
            message_id=request.get("message_id") or str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[new_data_part(part) for part in request["data_parts"]],
        )
        # Per-call headers travel as service parameters, sent as HTTP headers on the POST only.
        context = ClientCallContext(service_parameters=dict(request.get("headers") or {}))
        client = factory.create(card)
        try:
            async for event in client.send_message(SendMessageRequest(message=message), context=context):
                if event.HasField("message"):
                    return out | {"kind": "message", "data_parts": get_data_parts(event.message.parts)}
                if event.HasField("task"):
                    task = event.task
                    parts = list(task.status.message.parts)
                    for artifact in task.artifacts:
                        parts.extend(artifact.parts)
                    return out | {
                        "kind": "task",
                        "data_parts": get_data_parts(parts),
                        "task_state": TaskState.Name(task.status.state),
                    }
            raise A2AClientError("the reply held neither a message nor a task")
        except A2AError as exc:
            error = rpc_error(exc)
            if error is None:
                raise
            return out | {"kind": "error", "data_parts": [], "error": error}
        finally:
            await client.close()


def main() -> int:
    try:
        result = asyncio.run(present(json.load(sys.stdin)))
    except Exception as exc:  # transport, card or protocol failure
        print(f"a2a_present: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
