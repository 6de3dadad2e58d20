# Schemathesis hooks for tests/openapi.rs: WHEP bodies (SDP offers, trickle-ICE fragments) are
# text; schemathesis has no serializer for their media types, so it sends generated strings as
# UTF-8 (anything else as its JSON text).
import json

import schemathesis


@schemathesis.serializer("application/sdp", "application/trickle-ice-sdpfrag")
def sdp_text(ctx, value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()
