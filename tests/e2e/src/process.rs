//! Processes the harness starts: detached from the terminal's process group (so `make
//! cluster-up` can return), logged to a file, recorded by pid, and stopped by that pid.

use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// One started process: its name, pid and log file.
#[derive(Clone, Debug)]
pub struct Started {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// Starts `program args` with `env`, output appended to `<dir>/logs/<name>.log`, and writes
/// its pid to `<dir>/pids/<name>`, where `stop_all` finds it.
pub fn start(dir: &Path, name: &str, program: &Path, args: &[String], env: &[(String, String)]) -> Result<Started> {
    if !program.exists() {
        return Err(Error::MissingBinary(program.to_path_buf()));
    }
    let logs = dir.join("logs");
    let pids = dir.join("pids");
    fs::create_dir_all(&logs).map_err(Error::io(format!("creating {}", logs.display())))?;
    fs::create_dir_all(&pids).map_err(Error::io(format!("creating {}", pids.display())))?;
    let log_path = logs.join(format!("{name}.log"));
    let log = open_log(&log_path)?;
    let err_log = log.try_clone().map_err(Error::io("cloning a log handle"))?;
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().cloned()).stdin(Stdio::null()).stdout(log).stderr(err_log);
    // A session of its own: Ctrl-C in the terminal that ran `make cluster-up` does not reach it,
    // and the harness stops it by pid instead.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().map_err(Error::io(format!("starting {}", program.display())))?;
    let pid = child.id();
    fs::write(pids.join(name), pid.to_string()).map_err(Error::io("writing a pid file"))?;
    Ok(Started { name: name.to_string(), pid, log: log_path })
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).map_err(Error::io(format!("opening {}", path.display())))
}

pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // Signal 0 checks existence; a zombie (exited, not yet reaped) counts as gone.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state != Some("Z")
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        unsafe {
            libc::kill(pid, sig);
        }
    }
    reap(pid);
}

/// Collects the exit status of our own children so they do not linger as zombies.
fn reap(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`. Returns once the process is gone.
pub fn stop(pid: u32, grace: Duration) {
    if !is_alive(pid) {
        return;
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        reap(pid);
    }
    if is_alive(pid) {
        signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            reap(pid);
        }
    }
}

/// SIGKILL at once: a crash, as the operator-restart scenario needs.
pub fn kill(pid: u32) {
    stop(pid, Duration::ZERO);
}

/// Stops every process with a pid file under `<dir>/pids` and removes the pid files: the pod
/// runner first (it stops its pods' processes itself), then pods it left, then the rest in
/// reverse start order (clients before the API server, the API server before etcd).
pub fn stop_all(dir: &Path, grace: Duration) -> Vec<String> {
    let pids = dir.join("pids");
    let Ok(entries) = fs::read_dir(&pids) else { return Vec::new() };
    let mut found: Vec<(u8, std::cmp::Reverse<std::time::SystemTime>, PathBuf)> = entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let modified = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            (stop_rank(&name), std::cmp::Reverse(modified), e.path())
        })
        .collect();
    found.sort();
    let mut stopped = Vec::new();
    for (_, _, path) in found {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(pid) = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            if is_alive(pid) {
                stop(pid, grace);
                stopped.push(name);
            }
        }
        let _ = fs::remove_file(&path);
    }
    stopped
}

fn stop_rank(name: &str) -> u8 {
    match name {
        "pod-runner" => 0,
        n if n.starts_with("pod.") => 1,
        _ => 2,
    }
}

/// Forgets a process that was stopped on purpose (its pid file goes).
pub fn forget(dir: &Path, name: &str) {
    let _ = fs::remove_file(dir.join("pids").join(name));
}

/// The last lines of a log, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
