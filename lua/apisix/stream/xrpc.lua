-- apisix.stream.xrpc (APISIX's stream RPC framework): moongate has no stream proxy. The module
-- loads, since the prometheus exporter requires it, and refuses every member.
return require("moongate.refused_module")("apisix.stream.xrpc",
    "moongate has no stream (L4) proxy")
