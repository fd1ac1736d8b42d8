//! Sandbox mode for untrusted code: the chunk runs with the JIT off (for it and every function
//! it defines) and under an instruction-count hook that aborts it once its budget is spent.
//!
//! Why the JIT must be off: LuaJIT's count hooks only fire in the interpreter, so a loop that
//! got compiled into a trace could never be stopped. Why the hook is installed only while
//! sandboxed code runs: in LuaJIT hooks are global to the VM (`lua_sethook` sets them on the
//! global state, not per coroutine), and an active count hook also stops LuaJIT from compiling
//! hot code, so a permanent hook would slow every trusted plugin down.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Function, HookTriggers, MultiValue, VmState};

use super::LuaVm;

/// How often the hook runs; the budget is checked at this granularity.
const HOOK_EVERY: u32 = 1000;

/// What one call of sandboxed code may spend.
#[derive(Debug, Clone, Copy)]
pub struct SandboxBudget {
    /// VM instructions per call (rounded up to the hook's step of 1,000).
    pub instructions: u64,
}

thread_local! {
    /// How many sandboxed calls are running on this worker thread (sandboxed code calling back
    /// into another sandboxed function nests); the hook is installed while it is above zero.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Removes the hook when the outermost sandboxed call ends, however it ends.
struct DepthGuard<'a>(&'a mlua::Lua);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        let left = DEPTH.with(|d| {
            let n = d.get().saturating_sub(1);
            d.set(n);
            n
        });
        if left == 0 {
            self.0.remove_hook();
        }
    }
}

fn exceeded(limit: u64) -> mlua::Error {
    mlua::Error::runtime(format!(
        "sandboxed code exceeded its instruction budget ({limit} instructions)"
    ))
}

impl LuaVm {
    /// Compiles `source` as chunk `name` for sandboxed running: the returned function runs the
    /// chunk with the JIT off for it and everything it defines, and raises
    /// `sandboxed code exceeded its instruction budget (N instructions)` once a call has run
    /// `budget.instructions` VM instructions. Functions the chunk returns or stores keep the JIT
    /// off, but only calls made through the returned function are counted.
    pub fn load_sandboxed(
        &self,
        name: &str,
        source: &str,
        budget: SandboxBudget,
    ) -> mlua::Result<Function> {
        let lua = &self.lua;
        let chunk = lua
            .load(source)
            .set_name(format!("={name}"))
            .into_function()?;
        // `jit.off(f, true)` flushes and disables compilation for `f` and every function
        // prototype nested in it, so no part of the chunk can enter a trace the hook can't see.
        let jit: mlua::Table = lua.globals().get("jit")?;
        let off: Function = jit.get("off")?;
        off.call::<()>((chunk.clone(), true))?;
        let limit = budget.instructions;
        lua.create_function(move |lua, args: MultiValue| {
            let outermost = DEPTH.with(|d| {
                let n = d.get();
                d.set(n + 1);
                n == 0
            });
            let _guard = DepthGuard(lua);
            if outermost {
                let spent = Rc::new(Cell::new(0u64));
                lua.set_hook(
                    HookTriggers::new().every_nth_instruction(HOOK_EVERY),
                    move |lua, _| {
                        let n = spent.get() + u64::from(HOOK_EVERY);
                        spent.set(n);
                        if n > limit {
                            // From now on fail on every instruction: a `pcall` in the sandboxed
                            // code could otherwise catch the error and keep looping, but no
                            // Lua instruction after the catch can run either.
                            lua.set_hook(
                                HookTriggers::new().every_nth_instruction(1),
                                move |_, _| Err(exceeded(limit)),
                            )?;
                            return Err(exceeded(limit));
                        }
                        Ok(VmState::Continue)
                    },
                )?;
            }
            chunk.call::<MultiValue>(args)
        })
    }
}
