-- A module moongate does not provide but that code `require`s at load time without using it
-- (APISIX's prometheus exporter requires `apisix.stream.xrpc`, and through grpc-transcode's
-- proto module, `pb` and `protoc`): it loads, and every member anyone reads or writes raises an
-- error naming the module, the member and why, so a real use fails where the cause is visible.

local error, tostring, setmetatable = error, tostring, setmetatable

return function(module_name, reason)
    local function refuse(_, member)
        error(module_name .. "." .. tostring(member) .. " is not supported by moongate: "
              .. reason, 2)
    end
    return setmetatable({}, { __index = refuse, __newindex = refuse })
end
