"""The floor for startup and memory: a bare MCPServer with one tool, over stdio.

It lives alone in its folder: a script's folder comes first on sys.path, and no module here may
shadow one the SDK imports.
"""

from mcp.server import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    server.run()
