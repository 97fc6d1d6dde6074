"""A WebSocket peer for the lua-resty-websocket client tests (python3-websockets, RFC 6455).

    python3 ws_echo.py PORT [CERT KEY]

Listens on 127.0.0.1:PORT, over TLS (wss://) when given a certificate and its key. Each text or binary message is answered with "echo: " + message
(same type), except:
  "bye"     -> the server closes with code 1000 and reason "bye!"
  "pingme"  -> the server sends a ping with payload "srv", waits for the pong (at most 5 s)
               and answers "pong received"
  "path"    -> answers the request path and the Sec-WebSocket-Protocol it chose ("-" for none)
  "fragments" -> a text message in four frames: "frag1 ", "frag2 ", "frag3" and an empty final
               one (websockets ends a message sent from an iterator so)
  "big N"   -> a text message of N bytes "y"
  "headers" -> answers the request's Origin and X-Custom header fields ("-" for none)
"""
import asyncio
import ssl
import sys

import websockets


async def handler(ws, path):
    async for msg in ws:
        if msg == "bye":
            await ws.close(1000, "bye!")
            return
        if msg == "pingme":
            waiter = await ws.ping(b"srv")
            await asyncio.wait_for(waiter, 5)
            await ws.send("pong received")
        elif msg == "fragments":
            await ws.send(iter(["frag1 ", "frag2 ", "frag3"]))
        elif isinstance(msg, str) and msg.startswith("big "):
            await ws.send("y" * int(msg[4:]))
        elif msg == "headers":
            h = ws.request_headers
            await ws.send("%s %s" % (h.get("Origin", "-"), h.get("X-Custom", "-")))
        elif msg == "path":
            await ws.send("%s %s" % (path, ws.subprotocol or "-"))
        elif isinstance(msg, str):
            await ws.send("echo: " + msg)
        else:
            await ws.send(b"echo: " + msg)


async def main(port, cert=None, key=None):
    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    async with websockets.serve(handler, "127.0.0.1", port, subprotocols=["chat"], max_size=2 ** 20, ssl=tls):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), *sys.argv[2:4]))
