-- core.math: integer helpers.

local _M = {}

-- Greatest common divisor (weights of round-robin balancers).
function _M.gcd(a, b)
    while b ~= 0 do
        a, b = b, a % b
    end
    return a
end

return _M
