-- protoc (lua-protobuf's .proto compiler) is not provided by moongate: see
-- moongate.refused_module.
return require("moongate.refused_module")("protoc",
    "lua-protobuf is a C library moongate does not bundle (gRPC transcoding is not available)")
