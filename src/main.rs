//! `left` keeps a folder identical on two or more Linux machines. The README says how to use it;
//! this is how it works. The wire protocol is described in the docs of [`proto::wire`].
//!
//! # Source layout
//!
//! The pipeline runs scan -> index -> announce -> needs -> pull -> install; each subsystem is a
//! folder of `src/`, and uses only those below it in this list (`tests/layout.rs` checks it, and
//! that no module uses one that uses it back):
//!
//! - `daemon` (the threads: listener, dialers, scanner, saves), `status` (the status file and
//!   `left status`), `cli` and `config` (options);
//! - [`net`]: connections to peers: `frame` (the shared reading budget, the frame reader and
//!   writer), `handshake`, `conn` (a connection's reader, writer and puller; which of two
//!   connections stays), `announce` (our index to a peer), `serve` (blocks a peer asks for);
//! - [`scan`]: what changed on disk (`scanner`);
//! - [`sync`]: deciding and receiving: `model` (the rules that decide between versions, and the
//!   state they guard), `needs` (what a peer has that we are to take, in memory up to a bound,
//!   then waiting on disk), `puller` (a batch at a time), `transfer` (a file's blocks: plan,
//!   fetch, verify, assemble), `delta` (sub-block transfer), `install` (renames into place,
//!   folders, deletions, conflict copies), `disk` (metadata and temp files), `link` (what a
//!   connection's puller works with), `pool` (block buffers);
//! - [`proto`]: the protocol as pure functions over bytes: `wire` (frames), `auth` (the key
//!   schedule and proofs), `hmac` and `hkdf` (its PRF), `chacha`, `poly1305` and `aead` (RFC
//!   8439, written here), `seal` (frames sealed per direction);
//! - [`store`]: what we hold: `entry` (an entry and its rules), `codec` (its encoding, shared by
//!   the wire and the index files), `index` (base file, journal, overlay), `version` (version
//!   vectors), `intents` (the install log), `names` (what a name may be), `ignore`;
//! - [`hash`]: MD5, XXH64, rolling sums, and `md5x` (many MD5s at once in SIMD lanes);
//! - [`sys`]: the operating system through hand-declared calls: `dirfd` (changes through folder
//!   descriptors, never through a symlink), `open` (opens that never follow one), `watch`
//!   (inotify), `signal`, `limits`; with the hashing kernels, the only place with `unsafe`;
//! - `log`, `error`.
//!
//! # Threads, their state, and the lock
//!
//! Each stage keeps its working state to itself and hands on results: the scanner's walk (the
//! folders to list, the files to hash, what it found gone) lives in `scan::scanner::Walk`; each
//! connection has a reader, a writer fed by a queue of `Out` messages, and a puller with its own
//! batch, buffers (`sync::pool`) and block answers (a channel from the reader); hashing and
//! assembling run with no lock held. What is shared is `sync::model::State` behind one mutex:
//! the index, and per peer what it has that we need (decided against the index, so they change
//! together), which paths pulls are busy with, and what `left status` shows.
//!
//! Some file operations do run under that lock, on purpose: an install checks that its decision
//! still holds and that the file on disk is the one the index knows, renames, and records the
//! new entry in one step (with the lock released between the check and the rename, a scan or
//! another connection could change the path in between and the index would describe a file
//! that is not there); the scanner looks at a path once more under the lock before it records a
//! folder or a deletion, for the same reason; and a whole rewrite of the index base is written
//! under it (see Index), paced so it never takes more than a third of the time. File data is
//! never read, written or fsynced under the lock: what is renamed under it was made durable
//! before, and the renames are made durable once the lock is released (a big file's folder
//! fsynced, a group of small files by one filesystem sync), with index saves held until then;
//! only where a losing edit was just renamed aside is its folder fsynced under the lock, before
//! the winner is recorded with the loser's version merged in (and announced), and only where a
//! conflict copy of the same content (by the index's hash) is already there are the two read
//! and compared under it (a stat can hide an edit; the copy is removed only if they match). A
//! peer's newer version with our content puts its mode and mtime on our file under the lock.
//! Moving the checks and renames out of the lock too (a claim per path instead) is work still
//! to do.
//!
//! # Index
//!
//! Per file: path, size, mtime, mode, block size, the MD5 of every block, the file's hash (the MD5
//! of its block MD5s: every block is checked on arrival, so this identifies the content and costs
//! nothing to derive), a version vector, and locally an XXH64 of every block (files of 1 MiB or
//! more).
//!
//! It lives in `share/.left/` (never synced) as a base file, `index`, sorted by path, written
//! atomically (temp file, fsync, rename) and checked by a trailing XXH64 and length (an MD5 cost as
//! much as the write; files with one, from earlier versions, still load) and its order when read,
//! and a journal, `index.log`: each save (every 0.25 s while something changes) appends the entries
//! changed since the last one as a record with its own MD5 and fdatasyncs it, so a save costs what
//! changed, not the whole index (11 MB with 100,000 files). Memory holds only those changed entries
//! and one path per 4 KiB page of the base: a lookup reads a page, through a 64 KiB window (100,000
//! files: 3-6 MiB peak per process while they sync, 2-3 MiB after). Past 2048 changed entries or 2
//! MiB of them (long names, block lists and versions count), when the journal outgrows the base, or
//! when entries were removed, the base is written anew under the lock, its unchanged entries copied
//! in runs (25-30 ms for 100,000 entries).
//!
//! A record cut short by a crash is not applied, nor anything after it, and both files are then
//! written anew; a damaged base is set aside and the index rebuilt from the files, which loses
//! nothing; a base that cannot be read back while running stops the process with one line (going
//! on could take files for new or deleted). After a restart only files whose size, mtime, inode or
//! mode changed are hashed again: after a kill -9, those changed or received in the last 0.25 s.
//!
//! ## The install log
//!
//! Received files are logged ahead: before a group of them is renamed into place, their entries are
//! appended to `.left/installs`, and the `syncfs` that makes their data durable makes the log
//! durable too (no fsync of its own); the log is emptied once the index is saved. After a crash or
//! power cut, a file whose content and mode are those of a logged entry newer than (or concurrent
//! with) the index's takes that entry's version, so a file received just before the cut is never
//! taken for a local edit (which would make spurious conflict copies); any other changed file is a
//! local edit.
//!
//! ## What a power cut costs
//!
//! At most a re-fetch of what was in flight (a file not yet renamed into place comes again, its temp
//! file's verified blocks reused where they reached the disk); every file is one version or another,
//! never a mix, and nothing installed before the cut goes back or away. `make powercut CUTS=20` at
//! 2a825a9 (protocol 3, with a key): 2,086 versions, and at 789afb6: 2,210, each with 0 wrong,
//! vanished or older files and 0 spurious conflict copies; at 95ae47c: 20 cuts of the receiving VM (ext4, qemu killed) mid-sync, 2,204 versions written, 0
//! wrong, vanished or older files, 0 spurious conflict copies, 0 files taken for local changes after
//! the boots (at 7667c67: 2,522 versions, at 1759eba: 2,266, all zeros too; the build before the
//! install log: 2-4 spurious conflict copies in every 10 cuts).
//! (Killing a receiver 25 times at random moments while its peer kept writing 2,000 files: 1,205
//! files hashed again in all and no conflict copy; with the index saved every second, 33,617 and 7
//! spurious conflict copies.)
//!
//! # Change detection
//!
//! inotify (declared by hand, no crates) wakes the scanner within ~30 ms of a change, and the scan
//! reads only the folders that had events (and new folders in them); a file is hashed again when its
//! stat changed or when it was written to since the last scan (a write sets the mtime when it starts
//! and reports its event when it ends, so a scan that hashed the file in between saw the same stat
//! before and after). A full walk runs at start and every 10 minutes as a safety net (for
//! shared-mmap writes, network filesystems, a lost event queue); without inotify the scanner walks
//! every 0.3 s (slowed down automatically so it never takes more than about a tenth of a core on
//! huge trees). A file is stat'ed before and after hashing, and between every 4 MiB while it is
//! hashed; one that changed meanwhile (still being written, the paper's problem 2) is looked at
//! again. Big files are hashed on every core, and an edited file gets new MD5s only for the blocks
//! whose XXH64 changed.
//!
//! # Hashing
//!
//! In `md5x`. MD5 is a chain of dependent steps, so one message at a time keeps a core waiting
//! (0.5-0.7 GB/s). Blocks are independent: their MD5s are computed side by side, one per lane of the
//! vector registers — 16 with AVX-512, 8 with AVX2, 8 with SSE2 (two registers of 4), chosen at run
//! time, each kernel checked against the `md-5` crate. On this project's machine (a Xeon with
//! AVX-512): 6 GB/s on one core with AVX-512, 2.1 GB/s with AVX2, 1.7 GB/s with SSE2, against 0.5
//! GB/s one block at a time. On aarch64 (piCore64): 8 lanes with NEON (two registers of 4),
//! checked against `md-5` under qemu, not timed on ARM hardware. The scanner reads 1 MiB of
//! blocks at a time and hashes them together, and hashes files under 1 MiB two at a time (a first
//! scan of 100,000 small files with a cold cache: 2.8-2.9 s instead of 3.9-4.3 s); the receiver
//! checks the blocks that have arrived together, on the connection's reader, and the blocks it
//! assembles or takes from other local files in batches on helper threads.
//!
//! # Blocks
//!
//! Files are cut into 64 KiB blocks (bigger files get bigger blocks so that no file has more than
//! 8192 of them; 64 KiB up to 512 MiB). 64 KiB is small enough that rename/copy detection finds most
//! data and that one block in flight costs little memory, and large enough that the per-block cost
//! (16 bytes of index, one request of ~40 bytes, one MD5 call) is under 0.1% of the data. Scattered
//! small changes are handled below the block level by delta transfer.
//!
//! # Connections
//!
//! One TCP connection per peer, kept open, pinged every 30 s, dropped after 90 s of silence and
//! re-dialed with backoff (0.25 s doubling to 10 s). A peer's dialer stops dialing while a
//! connection with the peer's address is up: once its own connection learned the peer's device,
//! one to that device (either side may have dialed it; a hello claiming the peer's port with
//! another device does not count), before that, one whose hello claims the peer's port. A dialer
//! that reaches a device already connected closes its own connection, and of two connections
//! registering for the same device at once, one with a listed peer's address beats one let in by
//! `--allow`, then the one dialed by the smaller device id stays.
//! On connect both send their whole index (IndexDone only after their first scan), then only
//! changes: the entries changed since the base file was written, by number, then the base's own, by
//! path. In path order a folder comes before what it held, so the receiver applies a folder's
//! deletion only once the pass that carried it is complete and nothing inside it is pending.
//!
//! # Pulling
//!
//! In `puller` and `transfer`. For each file a peer has in a newer version, the receiver plans each
//! block's source: a local file the same batch deletes, moved into place whole (a rename); its own
//! current version, if the block is unchanged at the same offset (copied with `copy_file_range`, in
//! the kernel: a reflink where the filesystem shares extents); zeros (left as a hole); the temp file
//! of an earlier try (resume); an earlier block of the same file; any local file of a batch holding
//! a block with that MD5; the old version by delta; or the peer. Requests are pipelined (1 MiB, at
//! most 128 requests in flight), and local work (copies, checks) is done while the peer's answers
//! are on the way. Blocks from the peer are checked against their MD5s by the connection's reader as
//! they arrive; blocks from anywhere else on helper threads; one that turns out wrong is fetched
//! from the peer.
//!
//! The temp file `.NAME.left-tmp` (same folder, hidden, never synced) is fsynced, given its mode and
//! mtime, and renamed into place, then the folder is fsynced. Big files are written back as they
//! arrive (`sync_file_range`), so the final fsync has little left; small files go to the
//! connection's installer thread, which makes each group (a batch, up to 1024 files) durable with
//! two filesystem syncs (`syncfs`: data, then renames) instead of two per file while the puller goes
//! on with the next batch. At start the soft limit on open files is raised to the hard one; a batch
//! holds at most its connection's share of it (two descriptors per file), so Tiny Core's default of
//! 1024 is never exceeded. A failure keeps the temp file for resume; a file that failed is retried
//! after 5 s.
//!
//! # Delta transfer
//!
//! In `delta`. When a block differs and we hold an older version of the file, we ask the peer for a
//! rolling checksum and the XXH64 of each 4 KiB sub-block of the new block (192 bytes per 64 KiB
//! block), look for each sub-block in our old version — at the same offset, then at the shift where
//! moved data was found last, then, if half the block is still missing, by rolling the checksum over
//! 64 KiB either side — and fetch only the runs that are found nowhere (at most 8 per block). The
//! block is assembled and checked against its MD5 like any other; the answers are handled as they
//! arrive, so the link stays full. A file that turns out to be rewritten (most sub-blocks missing)
//! switches back to whole blocks, and stops searching after 8 searches that found nothing. Bytes
//! shifted by an insertion or a deletion are found as long as the shift changes by at most 64 KiB at
//! a time: measured, 1 KiB inserted in the middle of a 500 MiB file sent 773,120 bytes of file data
//! (the previous version, without the rolling search, sent the whole second half: 262,150,912
//! bytes).
//!
//! # Renames
//!
//! The sender recognises a moved file by its inode, size and mtime and reuses its hashes instead of
//! reading it again; the receiver, seeing a new file whose blocks a file the same batch deletes
//! holds, reads them from that file, checks each one's MD5 and writes it to the new file's temp
//! file; the old name's deletion waits until the new file is in (`puller::choose`), so it is
//! read from in whatever batch the new file falls and is never gone while the new name is not
//! complete. A renamed file costs no data on the wire (its log line says so: 0 on the wire, all
//! of it reused locally), unless its old name's deletion waits on disk (a rename of more
//! entries than `--max-pending` holds in memory sends some files again). It is copied, not moved into place: the old
//! file may be open, and a write to it that lands while it is moved would be installed under
//! the new name as the peer's version (sixth review; chaos seed 833), or lost; copied, such a
//! write fails a block's check (that block comes from the peer) and stays in the old file,
//! which its deletion then finds changed and keeps.
//!
//! # Safety
//!
//! Content whose MD5 does not match is never installed. Blocks taken from another local file, a temp
//! file or delta assembly are checked by MD5 too; blocks copied unchanged from the file's own current
//! version are trusted as the scanner trusts it — the file's stat must still be the index's when it
//! is opened, and again when the new version replaces it (otherwise it was edited locally and not
//! yet scanned, and the scan's new version takes part in conflict resolution instead of being
//! overwritten). The sender answers a block only while the file's stat is the one it was hashed with
//! (a file changing while it is sent is answered "changed" and fetched again once its new version
//! is announced); the receiver checks every block anyway. Memory stays flat whatever the file size:
//! at most 5.4 MiB RSS per process while 500 MB files sync and update (static build).
//!
//! Not synced: symlinks and special files (skipped, never followed), names that are not UTF-8,
//! `share/.left/` and temp files.
//!
//! # Versions
//!
//! Each device has a random 64-bit id made on first start (`share/.left/device`). A local change
//! gives the file a new version: its version vector with this device's counter moved past every
//! counter in it and to at least the time in microseconds, so that a device whose index was lost and
//! rebuilt, or lost its last changes to a kill, still makes versions newer than the ones it made
//! before (otherwise a file changed meanwhile could get the very version its peers hold of the old
//! content, and neither side would take the other's; with seconds, a change made again within the
//! second of a kill did). A peer's version that descends from ours replaces ours; ours that descends
//! from theirs stays. An update learned from one peer is passed on to the others like a local one,
//! so a full mesh and a chain (A–B–C, A and C knowing only B) converge alike.
//!
//! Deletions are tombstones with versions, kept 30 days from when each device recorded them (the
//! local stat of a deletion holds that time; the time its maker gave it, a peer's clock or a
//! peer's choice, does not count). A folder whose deletion arrives while it
//! holds files we have not synced yet stays.
//!
//! Concurrent versions (neither descends from the other): identical content merges silently (two
//! devices that got the same file independently). Otherwise an edit beats a deletion, then the newer
//! mtime wins, then the larger device id — the same answer on every device, except that a change
//! made knowing the other's (its vector holds the counter of the device that made the other)
//! wins over it. The device that takes a winner over a concurrent version of its own keeps its
//! own as a conflict copy and records the winner with both vectors merged: the conflict is
//! resolved there, and a later change of the winner's descends from the loser too (otherwise the
//! loser, still held by the device that made it, would be concurrent with it, and a later
//! deletion of the path would lose to it). Two devices that resolved different pairs of the same
//! versions can so hold one vector with different content: such entries are weighed as
//! concurrent, with the same answer on both sides. No conflict copy is kept of a version whose
//! content the winner's maker had (its vector holds that content's counter): that is a later
//! change, not a concurrent one. A conflict copy never
//! replaces anything: the rename refuses an existing name (`RENAME_NOREPLACE`), and a name holding
//! other content gets a number (`...-DEVICE-2.EXT`); one already holding the same content is kept as
//! it is.
//!
//! Type changes (a file replaced by a folder of the same name, or back) are versions like any other,
//! decided by the same rules. A losing file in the way of a folder is kept as a conflict copy. A
//! file whose version wins over a folder replaces it once the folder is empty (the deletions of what
//! it held, which the sender records first, are applied first); a folder that still holds files the
//! sender did not know of stays, the received file is kept beside it as a conflict copy, and the
//! folder gets a version newer than both, which the other peers then take.
//!
//! Version vectors name at most 1024 devices; a peer's version is taken (or merged with ours) only
//! if it leaves room for this device, so no vector we hold or send is one a peer or the index
//! refuses; a file whose history names more devices stays as it is here.
//!
//! # Trust
//!
//! The README states the threat model; these are the mechanisms behind it.
//!
//! ## Who may connect
//!
//! By default only the addresses of the peers on the command line (host names as their dialers last
//! resolved them: the accept thread never waits for DNS); anyone else is closed at once with one log
//! line. `--allow ADDR` (or `any`) widens this. The whole handshake has one 10 s deadline however
//! the client paces its bytes. Clients in their handshake have their own pool: 4 per address (16 for
//! a listed peer's), 16 in all from addresses that are not listed peers'; past it, 64 connections,
//! the last 8 only for listed peers' addresses. A flood from elsewhere cannot keep a listed peer out
//! (one from a listed peer's own address can, as can flooding the port).
//!
//! ## Shared key
//!
//! After the hellos each side proves it holds the key over both hello frames as they crossed this
//! connection (both devices, fresh 16-byte nonces from `/dev/urandom`, ports and flags) and which
//! side dialed, derived with HKDF over HMAC-MD5 (RFC 5869, 2104, written on top of md-5); a wrong
//! or missing key closes the connection before any index or data is exchanged, and both sides log
//! why. A proof is good for its own connection only: one replayed, relayed from another key
//! holder or reflected back does not verify. Every later frame is encrypted and authenticated
//! with ChaCha20-Poly1305 (RFC 8439, written here from the RFC, constant-time by construction)
//! under a per-direction key derived from the same hellos, its nonce the frame's number, so
//! frames cannot be read, altered, replayed, dropped or reordered unnoticed; a count that would
//! wrap ends the session. Peers of protocol 2 are refused, naming both versions. The sequence
//! and why: `net::handshake`; the key schedule: `proto::auth`; the frame format: `proto::seal`.
//!
//! ## Names from peers
//!
//! Checked where they arrive: relative, non-empty, at most 4096 bytes and 255 per component, no `.`,
//! `..` or empty component, no NUL, not inside `.left/`, not a temp-file name. Nothing is read or
//! written through a symlink: files are opened with `openat2` `RESOLVE_NO_SYMLINKS` (or each folder
//! checked and `O_NOFOLLOW`), folders are listed, and renames, removals, new folders, modes and
//! times are made, through folder descriptors opened one component at a time with `O_NOFOLLOW`
//! (`dirfd`), so a folder swapped for a symlink by a local user between two steps is never followed;
//! a symlink found where one of `left`'s own files goes (a temp file, a file in `.left/`) is removed,
//! not followed. A temp file kept for resume is reused only if it is a regular file of ours with one
//! link: a hard link planted at a temp name (to a file outside the share) is removed and the temp
//! file made anew (`O_EXCL`). On a case-insensitive filesystem a name colliding with another file is
//! refused (the file in the way is not in the index), never overwritten.
//!
//! The state folder `.left` is opened once at start (not through a symlink; it must belong to the
//! daemon's user, else it exits 1 with one line), held open, and every state file is reached through
//! that descriptor (`/proc/self/fd/N/...`): a symlink swapped in for `.left` while the daemon runs
//! (by anyone who can write the share's top) is never written through. State files are read only
//! if they are regular files, without waiting (a FIFO in their place does not hang the start), the
//! device id within 64 bytes, the install log record by record within 16 MiB of entries. The walk
//! that removes old temp files at start opens each folder from the top without following a symlink.
//!
//! ## Sizes and counts from peers
//!
//! Bounded before use: frames at 8 MiB + 64 KiB (256 bytes before authentication), counts against
//! the bytes present, 256 outstanding requests, an answer no larger than the request it answers; a
//! block must be one the index holds. Memory and disk for what peers announce are bounded for all
//! connections together, counting everything an entry holds (name, block hashes, version): N x 2 KiB
//! of entries in memory (`--max-pending`), 4 GiB waiting on disk, each connection always allowed 32
//! KiB and 16 MiB of them so a peer that never serves blocks cannot starve another; frames over 16
//! KiB being read and decoded share 2 MiB, and answers to our own requests another 2 MiB of their
//! own (an index frame holds at most 1,024 entries, so what it decodes into stays within a few
//! times its size); frames wait for their share in turn, first come first served, and while one
//! waits, a frame holding a share of the same budget must arrive at 64 KiB/s or more after 5 s, or
//! its connection ends, as it does if it holds more than half the budget for over 15 s: a peer
//! that starts a large frame and trickles the rest cannot hold the budget, nor ever hold up the
//! blocks another peer sends (the pace is looked at after every read), and an honest peer on a
//! link of 0.5 Mbit/s or more is not cut (but for an entry with a huge block list). A large answer is weighed against its request from its header, before it is read.
//! Entries land in memory's part of the index a bounded batch at a time (1 MiB of entries in a
//! puller's batch); the reader or puller whose step added 256 KiB or more to it waits for the
//! index to be written out before it takes more, and a whole rewrite of the index (under the
//! model's lock) waits three times as long as the last one took, so a peer piling up deletions
//! slows itself, not the others (a small file from a good peer arrived within 5 s while a fake
//! peer grew B's index to 120 MB with deletions; 10 s and more before). Old deletions are forgotten
//! 1 MiB of names at a time. Of two connections claiming one device, one with a listed peer's
//! address beats one let in by `--allow`. 64 peers announcing entries with the longest versions and never serving a
//! block: 26-29 MiB peak RSS (glibc build; 20 MiB static musl), was 340-380 MiB. Reads have
//! deadlines (10 s for the whole handshake, 90 s after). A bad frame ends that connection only: the
//! daemon keeps serving its other peers. `make fuzz` feeds a million mutated frames through the
//! decoder (a few thousand run in `make test`).
//!
//! # Memory
//!
//! Entries to receive from a peer are held in memory up to `--max-pending` (2048), and 2 KiB each on
//! average for all peers together (4 MiB: an entry of a 500 MiB file holds 128 KiB of block hashes,
//! so fewer of those); the rest wait, in the order the peer made them, in a file under `.left` that
//! is unlinked as soon as it is made (so nothing is left behind by a crash). A share of any number of
//! files syncs in bounded memory on the receiving side. The index lives on disk; memory holds up to
//! 2048 changed entries (2 MiB) and one path per page of the index file: a page spans at least 4 KiB
//! and 64 times the length of its first path, so those paths take at most 1/64 of the file
//! (12,000 deletions with 4,095-byte names: a restart peaked at 12.7 MiB, 106 MiB before). The scanner holds, for the
//! folder it reads, its listing and the index's entries directly inside it: a single folder of
//! 100,000 files costs tens of MiB while it is scanned (the 100,000 files of the bench are in 1,100
//! folders).
//!
//! # Testing
//!
//! `make test` runs unit and integration tests (real peers on 127.0.0.1), including a few seeds of
//! the chaos test (`tests/chaos.rs`): 3 peers in a mesh or a chain, each link through a proxy the
//! test cuts and heals, a seeded schedule of creates, overwrites, partial writes, deletes, renames,
//! file-folder changes, chmods and old mtimes, with peers stopped (SIGSTOP) and killed (kill -9) at
//! random moments; it checks that the shares converge, that no write is lost (the last write on each
//! side survives as the winner or a conflict copy unless a peer that saw it replaced it), that
//! nothing deleted comes back, and that no temp file or daemon death is left. `make chaos SEEDS=200
//! PEERS=5 TOPO=both` runs hundreds and shrinks a failing schedule to a replayable text (the
//! regressions at the end of the file). `make powercut CUTS=20` (as root) kills the receiving VM's
//! qemu mid-sync, its share on an ext4 disk, boots it again and checks every file against the
//! versions the sender wrote (`tinycore/README.md`). `make bench` measures against rsync and
//! syncthing (`tests/bench/README.md`).

#[macro_use]
mod log;
mod cli;
mod config;
mod daemon;
mod error;
mod hash;
mod net;
mod proto;
mod scan;
mod status;
mod store;
mod sync;
mod sys;

/// How many tries a race test makes: `n`, or a twentieth of it on aarch64, whose unit tests CI
/// runs under qemu-user (each try starts a thread and makes a dozen system calls, emulated).
#[cfg(test)]
fn tries(n: usize) -> usize {
    if cfg!(target_arch = "aarch64") {
        n / 20
    } else {
        n
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(cli::Command::Run(o)) => o,
        Ok(cli::Command::Status(dir)) => {
            return match status::show(&dir) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    log::err(&format!("left: {e}"));
                    ExitCode::from(2)
                }
            };
        }
        Ok(cli::Command::Keygen(file)) => {
            return match proto::auth::keygen(&file) {
                Ok(()) => {
                    log::out("left: wrote a new random key (mode 0600)\n");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    log::err(&format!("left: {e}"));
                    ExitCode::from(1)
                }
            };
        }
        Ok(cli::Command::Help) => {
            log::out(cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            log::out(&format!("left {}\n", env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            log::err(&format!("left: {msg} (see left --help)"));
            return ExitCode::from(2);
        }
    };
    log::set_level(opts.verbosity);
    match daemon::run(&opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            warn!("left: {e}");
            ExitCode::from(1)
        }
    }
}
