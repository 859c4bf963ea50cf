//! Process lifecycle from the `sched` tracepoints, so user space keeps a live
//! process table (it seeds the table from /proc at start).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use sensor_common::{counter, ExecRecord, ExitRecord, ForkRecord, RecordKind};

use crate::maps::{count, emit, header, EVENTS, FORK_PARENT};

/// Offset of `child_pid` in `sched_process_fork`: it moved when the comm
/// fields became `__data_loc` (6.x), so user space reads it from the
/// tracepoint's format file and patches it in before load.
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 44;

/// Offset of the `__data_loc` word of `filename` in `sched_process_exec`.
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFFSET: u32 = 8;

/// `sched:sched_process_fork` (kernel/fork.c, `copy_process` caller): runs in
/// the parent. Remembers the parent for the exec that usually follows.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: global patched by the loader; volatile so it is not const-folded.
    let off = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) } as usize;
    // SAFETY: reads the tracepoint record at an offset from its format file.
    let child: i32 = unsafe { ctx.read_at(off) }.map_err(i64::from)?;
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child = child as u32;
    let _ = FORK_PARENT.insert(&child, &parent_tgid, 0);
    emit(ForkRecord { header: header(RecordKind::Fork), child_pid: child, _pad: 0 });
    Ok(())
}

/// `sched:sched_process_exec` (fs/exec.c, `exec_binprm`): runs in the new
/// image, after the new credentials are committed.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let mut head = header(RecordKind::Exec);
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count(counter::RINGBUF_DROPS, 1);
        return Ok(());
    };
    let ptr = entry.as_mut_ptr();
    let ppid = FORK_PARENT
        .get_ptr(&head.pid)
        .map(|p| {
            // SAFETY: pointer from a successful map lookup.
            unsafe { *p }
        })
        .unwrap_or(0);
    // SAFETY: global patched by the loader.
    let off = unsafe { core::ptr::read_volatile(&EXEC_FILENAME_OFFSET) } as usize;
    // SAFETY: `__data_loc` word: low 16 bits offset, high 16 bits length.
    let loc: u32 = unsafe { ctx.read_at(off) }.unwrap_or(0);
    let src = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    // SAFETY: `ptr` points at reserved ring memory sized for ExecRecord.
    unsafe {
        let len = match bpf_probe_read_kernel_str_bytes(src, &mut (*ptr).filename) {
            Ok(s) => s.len() as u32,
            Err(_) => 0,
        };
        head.flags = 0;
        (*ptr).header = head;
        (*ptr).ppid = ppid;
        (*ptr).filename_len = len;
        (*ptr).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(0);
    Ok(())
}

/// `sched:sched_process_exit` (kernel/exit.c, `do_exit`): fires per thread;
/// only the thread group leader's exit is reported.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid == tid {
        let _ = FORK_PARENT.remove(&tgid);
        emit(ExitRecord { header: header(RecordKind::Exit) });
    }
    0
}
