-- pb (lua-protobuf) is not provided by moongate: see moongate.refused_module.
return require("moongate.refused_module")("pb",
    "lua-protobuf is a C library moongate does not bundle (gRPC transcoding is not available)")
