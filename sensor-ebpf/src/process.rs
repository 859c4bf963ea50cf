//! Process lifecycle from the `sched` tracepoints, so user space keeps a live
//! process table (it seeds the table from /proc at start).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user, generated,
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use sensor_common::{
    EXEC_ARGS_BYTES, EXEC_MAX_ARGS, ExecArgs, ExecRecord, ExitRecord, FLAG_EXEC_ARGS_TRUNCATED,
    ForkRecord, RecordKind, RootChangeRecord, counter,
};

use crate::{
    maps::{AGENTS, EVENTS, FORK_PARENT, count, emit, header, submit_flags_urgent},
    net::{CONNECT_ARGS, PENDING_BIND, SOCKET_ARGS},
    tls::SSL_ARGS,
};

/// Argument vectors captured at `execve` entry, by thread id, until the
/// exec completes (`sched_process_exec` names the old thread id).
#[map]
static EXEC_ARGS: LruHashMap<u32, ExecArgs> = LruHashMap::with_max_entries(1024, 0);

/// A zeroed value to create a thread's `EXEC_ARGS` entry from (2 KiB: too
/// large for the stack). The entry is then filled in place: it belongs to
/// this thread alone, unlike per-CPU scratch, which a task preempting this
/// one on the same CPU could overwrite.
static EMPTY_ARGS: ExecArgs = ExecArgs {
    len: 0,
    argc: 0,
    truncated: 0,
    _pad: 0,
    buf: [0; EXEC_ARGS_BYTES],
};

/// Each argument is copied with a window of half the buffer, starting at an
/// offset masked below that half, so every copy stays inside the buffer.
const ARG_WINDOW: usize = EXEC_ARGS_BYTES / 2;

/// Offset of `child_pid` in `sched_process_fork`: it moved when the comm
/// fields became `__data_loc` (6.x), so user space reads it from the
/// tracepoint's format file and patches it in before load.
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 44;

/// Offset of the `__data_loc` word of `filename` in `sched_process_exec`.
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFFSET: u32 = 8;

/// Offset of `group_dead` in `sched_process_exit`, 0 on kernels without it.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

/// Offset of `old_pid` (the thread that called exec) in `sched_process_exec`.
#[unsafe(no_mangle)]
static EXEC_OLD_PID_OFFSET: u32 = 16;

/// `syscalls:sys_enter_execve`: `execve(filename, argv, envp)`. The
/// arguments are read here, in the caller's memory: by the time user space
/// hears of the exec, a short-lived process may be gone with its
/// `/proc/<pid>/cmdline`.
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let _ = capture_args(&ctx, 24);
    0
}

/// `syscalls:sys_enter_execveat`: `execveat(fd, filename, argv, envp, flags)`.
#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let _ = capture_args(&ctx, 32);
    0
}

fn capture_args(ctx: &TracePointContext, argv_offset: usize) -> Result<(), i64> {
    // SAFETY: offset from the syscall tracepoint format.
    let argv: u64 = unsafe { ctx.read_at(argv_offset) }.map_err(i64::from)?;
    let tid = bpf_get_current_pid_tgid() as u32;
    // Replaces whatever an earlier, failed execve of this thread left.
    EXEC_ARGS.insert(&tid, &EMPTY_ARGS, 0)?;
    let entry = EXEC_ARGS.get_ptr_mut(&tid).ok_or(1i64)?;
    // SAFETY: pointer from a successful lookup; the entry is this thread's.
    let args = unsafe { &mut *entry };
    let mut off: usize = 0;
    for i in 0..EXEC_MAX_ARGS {
        // SAFETY: user memory via the helper.
        let Ok(ptr) = (unsafe { bpf_probe_read_user((argv + u64::from(i) * 8) as *const u64) })
        else {
            break;
        };
        if ptr == 0 {
            break;
        }
        if off >= ARG_WINDOW {
            args.truncated = 1;
            break;
        }
        let at = off & (ARG_WINDOW - 1);
        // SAFETY: `at < ARG_WINDOW` and the copy is at most ARG_WINDOW bytes,
        // inside the 2 * ARG_WINDOW buffer; the helper checks the source.
        let n = unsafe {
            generated::bpf_probe_read_user_str(
                args.buf.as_mut_ptr().add(at).cast(),
                ARG_WINDOW as u32,
                ptr as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            break;
        }
        off = at + n as usize;
        args.argc += 1;
        args.len = off as u32;
        if i == EXEC_MAX_ARGS - 1 || n as usize >= ARG_WINDOW {
            // More arguments may follow, or this one was cut at the window.
            args.truncated = 1;
        }
    }
    Ok(())
}

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
    // An agent's children are part of its session from their first call.
    if AGENTS.get_ptr(&parent_tgid).is_some() {
        let _ = AGENTS.insert(&child, &1, 0);
    }
    emit(ForkRecord {
        header: header(RecordKind::Fork),
        child_pid: child,
        _pad: 0,
    });
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
    // SAFETY: global patched by the loader.
    let old_off = unsafe { core::ptr::read_volatile(&EXEC_OLD_PID_OFFSET) } as usize;
    // SAFETY: offset from the tracepoint's format file.
    let old_tid: i32 = unsafe { ctx.read_at(old_off) }.unwrap_or(0);
    let old_tid = old_tid as u32;
    // SAFETY: `ptr` points at reserved ring memory sized for ExecRecord.
    unsafe {
        (*ptr).args_len = 0;
        (*ptr).argc = 0;
        if let Some(args) = EXEC_ARGS.get_ptr(&old_tid) {
            let copied = generated::bpf_probe_read_kernel(
                (*ptr).args.as_mut_ptr().cast(),
                EXEC_ARGS_BYTES as u32,
                (*args).buf.as_ptr().cast(),
            );
            if copied == 0 {
                (*ptr).args_len = (*args).len;
                (*ptr).argc = (*args).argc;
                if (*args).truncated != 0 {
                    head.flags |= FLAG_EXEC_ARGS_TRUNCATED;
                }
            }
        }
        let _ = EXEC_ARGS.remove(&old_tid);
        let len = match bpf_probe_read_kernel_str_bytes(src, &mut (*ptr).filename) {
            Ok(s) => s.len() as u32,
            Err(_) => 0,
        };
        (*ptr).header = head;
        (*ptr).ppid = ppid;
        (*ptr).filename_len = len;
        (*ptr).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    // The daemon reads the new image's identity from /proc: wake it now.
    entry.submit(submit_flags_urgent());
    Ok(())
}

/// `sched:sched_process_exit` (kernel/exit.c, `do_exit`): fires per thread;
/// only the end of the whole process is reported.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Per-thread state of this thread: a reused tid must not inherit it.
    let _ = SSL_ARGS.remove(&pid_tgid);
    let _ = PENDING_BIND.remove(&pid_tgid);
    let _ = CONNECT_ARGS.remove(&pid_tgid);
    let _ = SOCKET_ARGS.remove(&pid_tgid);
    let _ = EXEC_ARGS.remove(&tid);
    // A thread of an agent entered the agent table at its fork; a reused
    // tid must not find it there.
    if tid != tgid {
        let _ = AGENTS.remove(&tid);
    }
    // The process ends with its last thread (`group_dead`, kernels that have
    // it), else, on older kernels, when the leader exits.
    // SAFETY: global patched by the loader.
    let off = unsafe { core::ptr::read_volatile(&EXIT_GROUP_DEAD_OFFSET) } as usize;
    let process_ends = if off != 0 {
        // SAFETY: offset from the tracepoint's format file.
        unsafe { ctx.read_at::<u8>(off) }.unwrap_or(0) != 0
    } else {
        tgid == tid
    };
    if process_ends {
        let _ = FORK_PARENT.remove(&tgid);
        emit(ExitRecord {
            header: header(RecordKind::Exit),
        });
    }
    0
}

/// `syscalls:sys_exit_{chroot,pivot_root,setns}` that succeeded: the
/// process now sees another root, typically a container's that is being
/// set up (`runc init` pivots long before the entrypoint runs). User space
/// probes the TLS libraries under it ahead of their first use.
#[inline(always)]
fn root_changed(ctx: &TracePointContext) {
    // SAFETY: offset of `ret` in the syscall exit tracepoint format.
    let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(-1);
    if ret == 0 {
        emit(RootChangeRecord {
            header: header(RecordKind::RootChange),
        });
    }
}

#[tracepoint]
pub fn sys_exit_chroot(ctx: TracePointContext) -> u32 {
    root_changed(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_pivot_root(ctx: TracePointContext) -> u32 {
    root_changed(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    root_changed(&ctx);
    0
}
