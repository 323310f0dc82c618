"""Pure image helpers (bytes in, bytes out): previews small enough for an agent, and inpainting masks."""
