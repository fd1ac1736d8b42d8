-- core.version: the APISIX release whose plugin contract moongate's shim follows. Plugins read
-- VERSION (e.g. to report it in headers or logs), so it carries APISIX's number, not moongate's.
return {
    VERSION = "3.11.0",
}
