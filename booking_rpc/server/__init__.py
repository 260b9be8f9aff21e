"""The asyncio side of the transport: connections, flow control, limits, graceful shutdown."""

from booking_rpc.server.protocol import Limits, RpcProtocol
from booking_rpc.server.server import Server
from booking_rpc.server.stats import ServerStats

__all__ = ["Limits", "RpcProtocol", "Server", "ServerStats"]
