//! Virtual time for the guest.
//!
//! wasmtime-wasi implements `wasi:clocks/monotonic-clock` subscriptions with real timers, so a
//! guest's `time.sleep(60)` would hold a host thread for a minute: epoch deadlines only interrupt
//! running wasm, not a blocked host call. Here the clock is virtual instead: a subscription is
//! ready at once and moves the clock forward by the time slept. Time stands still otherwise, so
//! runs are reproducible, and a busy-wait on the clock is an infinite loop the deadline ends.

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::{subscribe, DynPollable, Pollable};

/// The WASI version whose `monotonic-clock` wasmtime-wasi registers (and this module replaces).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Nanoseconds since an arbitrary origin that differs between determinism runs.
#[derive(Clone, Copy, Debug)]
pub struct VirtualClock {
    now_ns: u64,
}

impl VirtualClock {
    pub fn new(origin_ns: u64) -> Self {
        VirtualClock { now_ns: origin_ns }
    }

    pub fn now(&self) -> u64 {
        self.now_ns
    }

    fn sleep_until(&mut self, when_ns: u64) {
        self.now_ns = self.now_ns.max(when_ns);
    }

    fn sleep_for(&mut self, duration_ns: u64) {
        self.now_ns = self.now_ns.saturating_add(duration_ns);
    }
}

/// Access to what the clock functions need in the store's data.
pub trait ClockState: Send + 'static {
    fn clock(&mut self) -> &mut VirtualClock;
    fn resources(&mut self) -> &mut ResourceTable;
}

/// A pollable that is always ready: the time it waited for has already been added to the clock.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

fn elapsed_pollable<T: ClockState>(state: &mut T) -> wasmtime::Result<Resource<DynPollable>> {
    let elapsed = state.resources().push(Elapsed)?;
    subscribe(state.resources(), elapsed)
}

/// Replace wasmtime-wasi's monotonic clock in `linker` with the virtual one.
pub fn link<T: ClockState>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("now", |mut store: StoreContextMut<'_, T>, (): ()| Ok((store.data_mut().clock().now(),)))?;
    clock.func_wrap("resolution", |_store: StoreContextMut<'_, T>, (): ()| Ok((1u64,)))?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, T>, (when,): (u64,)| {
        let state = store.data_mut();
        state.clock().sleep_until(when);
        Ok((elapsed_pollable(state)?,))
    })?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, T>, (duration,): (u64,)| {
        let state = store.data_mut();
        state.clock().sleep_for(duration);
        Ok((elapsed_pollable(state)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::VirtualClock;

    #[test]
    fn sleeping_moves_virtual_time_and_nothing_else_does() {
        let mut clock = VirtualClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.sleep_for(500);
        assert_eq!(clock.now(), 1_500);
        clock.sleep_until(1_200); // in the past: no change
        assert_eq!(clock.now(), 1_500);
        clock.sleep_until(9_000);
        assert_eq!(clock.now(), 9_000);
        clock.sleep_for(u64::MAX);
        assert_eq!(clock.now(), u64::MAX);
    }
}
