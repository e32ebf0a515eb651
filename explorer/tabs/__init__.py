"""The explorer's page, one module per part: each builds its components, holds the handlers of its
endpoints and wires its events (`layout`, `define_steps`, `wire`); `explorer.ui` lays them out."""
