//! Versioned schema migrations for both SQL dialects.
//!
//! A migration is a list of statements per dialect. They are applied in
//! version order under a database-wide lock (`pg_advisory_lock` /
//! `GET_LOCK`), so nodes starting together migrate once; each applied
//! version is recorded in `tokenim_migrations`. MySQL cannot roll back DDL,
//! so every statement is written to be safe to run again (`IF NOT EXISTS`).
//!
//! Column conventions: identifiers are `VARCHAR(64)` compared bytewise
//! (`COLLATE "C"` / `utf8mb4_bin`), so `ORDER BY` matches Rust's string
//! order; numbers, flags and times (ms) are `BIGINT`. MySQL reports `TEXT`
//! columns as BLOBs: they are read through [`super::text`].

use super::Dialect;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub postgres: &'static [&'static str],
    pub mysql: &'static [&'static str],
}

impl Migration {
    pub fn statements(&self, d: Dialect) -> &'static [&'static str] {
        match d {
            Dialect::Postgres => self.postgres,
            Dialect::MySql => self.mysql,
        }
    }
}

/// Every migration, oldest first. Append only: never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        postgres: &[
            r#"CREATE TABLE IF NOT EXISTS users (
            user_id VARCHAR(64) COLLATE "C" PRIMARY KEY,
            username VARCHAR(64) COLLATE "C" NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL)"#,
            r#"CREATE TABLE IF NOT EXISTS sessions (
            session_id VARCHAR(64) COLLATE "C" PRIMARY KEY,
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            device_id VARCHAR(64) COLLATE "C" NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL)"#,
            "CREATE INDEX IF NOT EXISTS sessions_device ON sessions (user_id, device_id)",
            r#"CREATE TABLE IF NOT EXISTS devices (
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            device_id VARCHAR(64) COLLATE "C" NOT NULL,
            platform VARCHAR(64) NOT NULL,
            last_seen BIGINT NOT NULL,
            synced_before BIGINT NOT NULL,
            push_provider VARCHAR(64),
            push_token TEXT,
            PRIMARY KEY (user_id, device_id))"#,
            r#"CREATE TABLE IF NOT EXISTS contacts (
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            other VARCHAR(64) COLLATE "C" NOT NULL,
            PRIMARY KEY (user_id, other))"#,
            r#"CREATE TABLE IF NOT EXISTS blocks (
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            other VARCHAR(64) COLLATE "C" NOT NULL,
            PRIMARY KEY (user_id, other))"#,
            r#"CREATE TABLE IF NOT EXISTS convs (
            conv_id VARCHAR(64) COLLATE "C" PRIMARY KEY,
            ty VARCHAR(16) NOT NULL,
            title TEXT,
            created_at BIGINT NOT NULL,
            only_admins_send BIGINT NOT NULL,
            pair_a VARCHAR(64) COLLATE "C",
            pair_b VARCHAR(64) COLLATE "C",
            last_seq BIGINT NOT NULL,
            last_ts BIGINT NOT NULL,
            msg_count BIGINT NOT NULL,
            member_count BIGINT NOT NULL,
            members_ver BIGINT NOT NULL,
            UNIQUE (pair_a, pair_b))"#,
            r#"CREATE TABLE IF NOT EXISTS members (
            conv_id VARCHAR(64) COLLATE "C" NOT NULL,
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            role VARCHAR(16) NOT NULL,
            muted_until BIGINT,
            joined_after BIGINT NOT NULL,
            read_seq BIGINT NOT NULL,
            read_count BIGINT NOT NULL,
            PRIMARY KEY (conv_id, user_id))"#,
            "CREATE INDEX IF NOT EXISTS members_user ON members (user_id)",
            r#"CREATE TABLE IF NOT EXISTS events (
            conv_id VARCHAR(64) COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            msg_count BIGINT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (conv_id, seq))"#,
            r#"CREATE TABLE IF NOT EXISTS dedup (
            sender VARCHAR(64) COLLATE "C" NOT NULL,
            client_msg_id VARCHAR(64) COLLATE "C" NOT NULL,
            conv_id VARCHAR(64) COLLATE "C" NOT NULL,
            kind VARCHAR(16) NOT NULL,
            msg_id VARCHAR(64) COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (sender, client_msg_id))"#,
            r#"CREATE TABLE IF NOT EXISTS acks (
            user_id VARCHAR(64) COLLATE "C" NOT NULL,
            device_id VARCHAR(64) COLLATE "C" NOT NULL,
            conv_id VARCHAR(64) COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (user_id, device_id, conv_id))"#,
        ],
        mysql: &[
            "CREATE TABLE IF NOT EXISTS users (
            user_id VARCHAR(64) NOT NULL PRIMARY KEY,
            username VARCHAR(64) NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS sessions (
            session_id VARCHAR(64) NOT NULL PRIMARY KEY,
            user_id VARCHAR(64) NOT NULL,
            device_id VARCHAR(64) NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            INDEX sessions_device (user_id, device_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS devices (
            user_id VARCHAR(64) NOT NULL,
            device_id VARCHAR(64) NOT NULL,
            platform VARCHAR(64) NOT NULL,
            last_seen BIGINT NOT NULL,
            synced_before BIGINT NOT NULL,
            push_provider VARCHAR(64),
            push_token TEXT,
            PRIMARY KEY (user_id, device_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS contacts (
            user_id VARCHAR(64) NOT NULL,
            other VARCHAR(64) NOT NULL,
            PRIMARY KEY (user_id, other)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS blocks (
            user_id VARCHAR(64) NOT NULL,
            other VARCHAR(64) NOT NULL,
            PRIMARY KEY (user_id, other)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS convs (
            conv_id VARCHAR(64) NOT NULL PRIMARY KEY,
            ty VARCHAR(16) NOT NULL,
            title TEXT,
            created_at BIGINT NOT NULL,
            only_admins_send BIGINT NOT NULL,
            pair_a VARCHAR(64),
            pair_b VARCHAR(64),
            last_seq BIGINT NOT NULL,
            last_ts BIGINT NOT NULL,
            msg_count BIGINT NOT NULL,
            member_count BIGINT NOT NULL,
            members_ver BIGINT NOT NULL,
            UNIQUE KEY convs_pair (pair_a, pair_b)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS members (
            conv_id VARCHAR(64) NOT NULL,
            user_id VARCHAR(64) NOT NULL,
            role VARCHAR(16) NOT NULL,
            muted_until BIGINT,
            joined_after BIGINT NOT NULL,
            read_seq BIGINT NOT NULL,
            read_count BIGINT NOT NULL,
            PRIMARY KEY (conv_id, user_id),
            INDEX members_user (user_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS events (
            conv_id VARCHAR(64) NOT NULL,
            seq BIGINT NOT NULL,
            msg_count BIGINT NOT NULL,
            body MEDIUMTEXT NOT NULL,
            PRIMARY KEY (conv_id, seq)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS dedup (
            sender VARCHAR(64) NOT NULL,
            client_msg_id VARCHAR(64) NOT NULL,
            conv_id VARCHAR(64) NOT NULL,
            kind VARCHAR(16) NOT NULL,
            msg_id VARCHAR(64) NOT NULL,
            seq BIGINT NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (sender, client_msg_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS acks (
            user_id VARCHAR(64) NOT NULL,
            device_id VARCHAR(64) NOT NULL,
            conv_id VARCHAR(64) NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (user_id, device_id, conv_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 2,
        name: "users of the server API: no username or password needed, avatar, metadata, deactivation",
        postgres: &[
            "ALTER TABLE users ALTER COLUMN username DROP NOT NULL",
            "ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL",
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS avatar_url TEXT",
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS metadata TEXT",
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS deactivated BIGINT NOT NULL DEFAULT 0",
        ],
        // One statement: MySQL applies it whole or not at all, so a failed
        // migration can be run again.
        mysql: &["ALTER TABLE users
            MODIFY username VARCHAR(64) NULL,
            MODIFY password_hash TEXT NULL,
            ADD COLUMN avatar_url TEXT NULL,
            ADD COLUMN metadata TEXT NULL,
            ADD COLUMN deactivated BIGINT NOT NULL DEFAULT 0"],
    },
    Migration {
        version: 3,
        name: "push setup: registration details, the token index of I-11, notification levels",
        postgres: &[
            "ALTER TABLE devices ADD COLUMN IF NOT EXISTS push_environment VARCHAR(16)",
            "ALTER TABLE devices ADD COLUMN IF NOT EXISTS push_p256dh TEXT",
            "ALTER TABLE devices ADD COLUMN IF NOT EXISTS push_auth TEXT",
            r#"ALTER TABLE devices ADD COLUMN IF NOT EXISTS push_key VARCHAR(64) COLLATE "C""#,
            "CREATE UNIQUE INDEX IF NOT EXISTS devices_push_key ON devices (push_key)",
            "ALTER TABLE members ADD COLUMN IF NOT EXISTS notify_level VARCHAR(16)",
            "ALTER TABLE members ADD COLUMN IF NOT EXISTS notify_until BIGINT",
        ],
        // One statement per table, each applied whole. Registrations made
        // before this version have no `push_key` until registered again.
        mysql: &[
            "ALTER TABLE devices
            ADD COLUMN push_environment VARCHAR(16) NULL,
            ADD COLUMN push_p256dh TEXT NULL,
            ADD COLUMN push_auth TEXT NULL,
            ADD COLUMN push_key VARCHAR(64) NULL,
            ADD UNIQUE INDEX devices_push_key (push_key)",
            "ALTER TABLE members
            ADD COLUMN notify_level VARCHAR(16) NULL,
            ADD COLUMN notify_until BIGINT NULL",
        ],
    },
];

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}
