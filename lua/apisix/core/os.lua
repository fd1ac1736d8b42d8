-- core.os: the few process-level calls APISIX makes through the C library (`setenv`,
-- `usleep`, `waitpid`), over LuaJIT's FFI.

local ffi = require("ffi")
local type, tostring, error = type, tostring, error

ffi.cdef([[
int setenv(const char *, const char *, int);
int usleep(unsigned int);
int waitpid(int, int *, int);
char *strerror(int);
]])

local libc = ffi.C
local WNOHANG = 1

local os_calls = {}

-- The text of the last C library error.
local function last_error()
    return ffi.string(libc.strerror(ffi.errno()))
end

local settable_value = { string = true, number = true }

-- Sets (overwriting) an environment variable of this process; child processes inherit it.
function os_calls.setenv(name, value)
    if type(name) ~= "string" or not settable_value[type(value)] then
        return false, "invalid argument"
    end
    if libc.setenv(name, tostring(value), 1) == 0 then
        return true
    end
    return false, last_error()
end

-- Blocks the whole worker thread: for start-up code only (requests use ngx.sleep).
function os_calls.usleep(microseconds)
    libc.usleep(microseconds)
end

-- Reaps child `pid` if it has exited, without waiting: `true, status` once it has, `false`
-- while it runs, `nil, err` when there is no such child.
function os_calls.waitpid(pid)
    if type(pid) ~= "number" then
        error("core.os.waitpid: pid must be a number", 2)
    end
    local status = ffi.new("int[1]")
    local reaped = libc.waitpid(pid, status, WNOHANG)
    if reaped == -1 then
        return nil, last_error()
    end
    return reaped == pid, status[0]
end

return os_calls
