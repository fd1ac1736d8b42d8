-- core.event: in-worker events between modules (one handler per event type).

local _M = {
    CONST = {
        BUILD_ROUTER = 1,
    },
}

local handlers = {}

function _M.push(kind, ...)
    local h = handlers[kind]
    if h then
        h(...)
    end
end

function _M.register(kind, handler)
    handlers[kind] = handler
end

function _M.unregister(kind)
    handlers[kind] = nil
end

return _M
