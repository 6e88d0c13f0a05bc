//! Keys built after the load (SQL in [`crate::sql::keys`]): the record of a table a run created
//! without its key, read and moved through its states. Creating the table with its record, and
//! building the key, are the coordinator's (`ferry_coordinator::keys`); this module holds the
//! record's statements.

use tokio_postgres::{GenericClient, Row};

use crate::sql::keys::{self as sql, key_state};
use crate::{LedgerError, Result};

/// A table whose key is (or was) built after its load.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PendingKey {
    /// The table.
    pub table_name: String,
    /// The run that created it and builds its key.
    pub run_id: String,
    /// The statement that adds the key.
    pub key_sql: String,
    /// [`key_state`].
    pub state: String,
    /// Who started the last build (host and process).
    pub builder: Option<String>,
    /// Why the last build failed.
    pub error: Option<String>,
}

impl PendingKey {
    /// Whether the key is on the table.
    pub fn built(&self) -> bool {
        self.state == key_state::BUILT
    }

    fn from_row(row: &Row) -> PendingKey {
        PendingKey {
            table_name: row.get(0),
            run_id: row.get(1),
            key_sql: row.get(2),
            state: row.get(3),
            builder: row.get(4),
            error: row.get(5),
        }
    }
}

/// Records that `run_id` created `table` without its key, which `key_sql` adds. Run it in the
/// transaction whose `CREATE TABLE` just succeeded: a record already there is of a dropped table
/// of the same name, and is replaced (else its run's state would hide the new table's key).
pub async fn record_pending_key(
    client: &impl GenericClient,
    table: &str,
    run_id: &str,
    key_sql: &str,
) -> Result<()> {
    client
        .execute(sql::INSERT_KEY, &[&table, &run_id, &key_sql])
        .await
        .map_err(LedgerError::db("cannot record a table's pending key"))?;
    Ok(())
}

/// The key record of `table`, if its key was built after a load (or is still to be).
pub async fn pending_key(client: &impl GenericClient, table: &str) -> Result<Option<PendingKey>> {
    let row = client
        .query_opt(sql::SELECT_KEY, &[&table])
        .await
        .map_err(LedgerError::db("cannot read a table's pending key"))?;
    Ok(row.as_ref().map(PendingKey::from_row))
}

/// The same, locked until the end of the caller's transaction: one builder at a time, and a
/// builder that died released it with its connection.
pub async fn lock_pending_key(
    client: &impl GenericClient,
    table: &str,
) -> Result<Option<PendingKey>> {
    let row = client
        .query_opt(sql::LOCK_KEY, &[&table])
        .await
        .map_err(LedgerError::db("cannot lock a table's pending key"))?;
    Ok(row.as_ref().map(PendingKey::from_row))
}

/// Every table `run_id` created without its key.
pub async fn run_keys(client: &impl GenericClient, run_id: &str) -> Result<Vec<PendingKey>> {
    let rows = client
        .query(sql::SELECT_RUN_KEYS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read a run's pending keys"))?;
    Ok(rows.iter().map(PendingKey::from_row).collect())
}

/// Hands `table`'s unbuilt key to `run_id` when it is already that run's, or when the run that
/// created the table never reached the ledger (a plan stopped between the two); `false` when
/// another recorded run owns it (or it is built).
pub async fn adopt_pending_key(
    client: &impl GenericClient,
    table: &str,
    run_id: &str,
) -> Result<bool> {
    let updated = client
        .execute(sql::ADOPT_KEY, &[&table, &run_id])
        .await
        .map_err(LedgerError::db("cannot adopt a table's pending key"))?;
    Ok(updated == 1)
}

/// Sets `table`'s key state (one of [`key_state`]) with who set it and why; a `built` key stays
/// built.
pub async fn set_key_state(
    client: &impl GenericClient,
    table: &str,
    state: &str,
    builder: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    debug_assert!([
        key_state::PENDING,
        key_state::BUILDING,
        key_state::BUILT,
        key_state::FAILED
    ]
    .contains(&state));
    client
        .execute(sql::SET_KEY_STATE, &[&table, &state, &builder, &error])
        .await
        .map_err(LedgerError::db("cannot record a table's key state"))?;
    Ok(())
}
