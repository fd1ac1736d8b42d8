-- apisix.utils.content-decode: `dispatch_decoder(content_encoding)` gives the function that
-- turns a whole compressed body into its text (`decoder(body)` → text, or `nil, err`), or nil
-- for an encoding moongate cannot decode. `gzip` is decoded natively (moongate.inflate); `br`
-- has no decoder (as in APISIX built without its brotli library), so callers keep such a body
-- as it came.

local inflate = require("moongate.inflate")

local _M = {}

local decoders = {
    gzip = function(body)
        local text, err = inflate.gzip(body)
        if not text then
            return nil, "inflate gzip err: " .. err
        end
        return text
    end,
}

function _M.dispatch_decoder(content_encoding)
    return decoders[content_encoding]
end

return _M
