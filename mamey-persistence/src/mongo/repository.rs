//! A typed repository over one collection, with Convey's conventions.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use mamey_core::Error;
use mongodb::action::{Action, Delete, FindOne, InsertOne, ReplaceOne};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::database::{MongoDatabase, MongoSession, classify, error};

/// The field of a type that is stored as `_id`.
const ID: &str = "id";

/// The page size [`Repository::browse`] uses when asked for `0`.
pub const DEFAULT_PAGE_SIZE: u64 = 10;

/// The largest page [`Repository::browse`] returns; larger requests are cut
/// to it, so a caller cannot ask for a whole collection at once.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// A typed repository of `T` documents in one collection, after Convey's
/// `IMongoRepository`. Cheap to clone.
///
/// Conventions:
/// - **Collection:** the type's name in camelCase, without a `Document`
///   suffix, in the plural: `Order` → `orders`, `OrderLineDocument` →
///   `orderLines`, `Category` → `categories`. [`named`](Self::named) sets
///   another.
/// - **Fields:** the repository stores what serde writes; it renames
///   nothing. Give document types `#[serde(rename_all = "camelCase")]` — the
///   casing of Convey's documents and of mamey-messaging's `#[message]`
///   bodies — so that .NET services share the collections.
/// - **Id:** the field `id` (as serde names it) is stored as `_id`, and
///   read back from it, so a type needs no `#[serde(rename = "_id")]` (one
///   that has it works too). In filters and sorts, a top-level `id` means
///   `_id`. A document added without an `id` gets an `ObjectId`.
/// - **Unknown fields are ignored** when reading (do not put
///   `deny_unknown_fields` on document types): a newer version of the
///   service may add fields while an older one still runs.
///
/// ```no_run
/// use mamey_persistence::mongo::{MongoDatabase, Repository, Sort};
/// use mongodb::bson::doc;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct Order { id: String, customer_id: String, total: i64 }
///
/// # async fn run(db: MongoDatabase) -> Result<(), mamey_core::Error> {
/// let orders = Repository::<Order>::new(&db); // collection `orders`
/// orders.add(&Order { id: "o-1".into(), customer_id: "c-7".into(), total: 42 }).await?;
/// let page = orders
///     .browse(doc! { "customerId": "c-7" }, 1, 20, Sort::desc("total"))
///     .await?;
/// assert_eq!(page.total, 1);
/// # Ok(())
/// # }
/// ```
pub struct Repository<T> {
    database: Database,
    collection: Collection<Document>,
    indexes: Arc<Vec<IndexModel>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Repository<T> {
    fn clone(&self) -> Self {
        Self {
            database: self.database.clone(),
            collection: self.collection.clone(),
            indexes: Arc::clone(&self.indexes),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Repository<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("type", &std::any::type_name::<T>())
            .field("collection", &self.collection.name())
            .field("indexes", &self.indexes.len())
            .finish()
    }
}

impl<T> Repository<T> {
    /// The repository of `T` in `db`, in the collection named after `T`.
    #[must_use]
    pub fn new(db: &MongoDatabase) -> Self {
        let database = db.database().clone();
        Self {
            collection: database.collection(&collection_name(std::any::type_name::<T>())),
            database,
            indexes: Arc::new(Vec::new()),
            _type: PhantomData,
        }
    }

    /// Uses the collection `name` instead of the conventional one.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.collection = self.database.collection(name);
        self
    }

    /// Declares an index on `keys` (`doc! { "customerId": 1, "createdAt": -1 }`,
    /// stored field names), unique or not. The `Mongo` plug-in creates the
    /// declared indexes when it starts; [`create_indexes`](Self::create_indexes)
    /// does it for a repository made by hand.
    #[must_use]
    pub fn index(mut self, keys: Document, unique: bool) -> Self {
        let options = IndexOptions::builder()
            .unique(unique.then_some(true))
            .build();
        Arc::make_mut(&mut self.indexes)
            .push(IndexModel::builder().keys(keys).options(options).build());
        self
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.collection.name()
    }

    /// The driver's collection, for what the repository does not cover.
    #[must_use]
    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// Creates the declared indexes; an index that exists with the same
    /// keys and options is left as it is.
    ///
    /// # Errors
    /// The server refused, e.g. an index of the same keys with other
    /// options, or a unique index over duplicate values.
    pub async fn create_indexes(&self) -> Result<(), Error> {
        self.index_plan().create().await.map_err(|e| {
            let (kind, code, _) = classify(&e);
            Error::new(
                kind,
                code,
                format!("creating the indexes of `{}` failed", self.name()),
            )
            .with_source(e)
        })
    }

    pub(crate) fn index_plan(&self) -> IndexPlan {
        IndexPlan {
            collection: self.collection.clone(),
            models: Arc::clone(&self.indexes),
        }
    }
}

/// Indexes to create on a collection when the plug-in starts.
#[derive(Debug, Clone)]
pub(crate) struct IndexPlan {
    pub(crate) collection: Collection<Document>,
    pub(crate) models: Arc<Vec<IndexModel>>,
}

impl IndexPlan {
    /// Creates the indexes; one that exists with the same keys and options
    /// is left as it is.
    pub(crate) async fn create(&self) -> Result<(), mongodb::error::Error> {
        if !self.models.is_empty() {
            self.collection
                .create_indexes(self.models.iter().cloned())
                .await?;
        }
        Ok(())
    }
}

impl<T> Repository<T>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    /// The document with `_id` = `id`.
    ///
    /// # Errors
    /// The server failed, or the document does not read as a `T`.
    pub async fn get(&self, id: impl Serialize) -> Result<Option<T>, Error> {
        self.get_with(None, id).await
    }

    /// [`get`](Self::get) in a unit of work: it sees the unit's own writes.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_in(
        &self,
        tx: &mut MongoSession,
        id: impl Serialize,
    ) -> Result<Option<T>, Error> {
        self.get_with(Some(tx.session()), id).await
    }

    async fn get_with(
        &self,
        session: Option<&mut ClientSession>,
        id: impl Serialize,
    ) -> Result<Option<T>, Error> {
        let filter = doc! { "_id": self.id(id)? };
        let found = self
            .collection
            .find_one(filter)
            .optional(session, FindOne::session)
            .await
            .map_err(error)?;
        found.map(|doc| self.read(doc)).transpose()
    }

    /// Every document matching `filter` (`doc! {}` for all), in no set
    /// order. Use [`browse`](Self::browse) where the result may be large.
    ///
    /// # Errors
    /// The server failed, or a document does not read as a `T`.
    pub async fn find(&self, filter: Document) -> Result<Vec<T>, Error> {
        let cursor = self
            .collection
            .find(stored_filter(filter))
            .await
            .map_err(error)?;
        self.collect(cursor).await
    }

    /// One page of the documents matching `filter`, in `sort` order, and
    /// how many match in all. `page` counts from 1 (`0` is read as 1);
    /// `page_size` `0` is [`DEFAULT_PAGE_SIZE`], and it is cut to
    /// [`MAX_PAGE_SIZE`]. Ties in `sort` are broken by `_id`, so that pages
    /// neither repeat nor skip a document.
    ///
    /// # Errors
    /// The server failed, or a document does not read as a `T`.
    pub async fn browse(
        &self,
        filter: Document,
        page: u64,
        page_size: u64,
        sort: Sort,
    ) -> Result<Page<T>, Error> {
        let paging = Paging::new(page, page_size);
        let filter = stored_filter(filter);
        let total = self
            .collection
            .count_documents(filter.clone())
            .await
            .map_err(error)?;
        let cursor = self
            .collection
            .find(filter)
            .sort(sort.document())
            .skip(paging.skip)
            .limit(paging.limit)
            .await
            .map_err(error)?;
        Ok(Page {
            items: self.collect(cursor).await?,
            page: paging.page,
            page_size: paging.page_size,
            total,
        })
    }

    /// Whether a document matches `filter`.
    ///
    /// # Errors
    /// The server failed.
    pub async fn exists(&self, filter: Document) -> Result<bool, Error> {
        let count = self
            .collection
            .count_documents(stored_filter(filter))
            .limit(1)
            .await
            .map_err(error)?;
        Ok(count > 0)
    }

    /// Inserts `item`.
    ///
    /// # Errors
    /// A conflict when a document with its id (or the same value in a
    /// unique index) exists; unavailable or internal when the server failed.
    pub async fn add(&self, item: &T) -> Result<(), Error> {
        self.add_with(None, item).await
    }

    /// [`add`](Self::add) in a unit of work.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub async fn add_in(&self, tx: &mut MongoSession, item: &T) -> Result<(), Error> {
        self.add_with(Some(tx.session()), item).await
    }

    async fn add_with(&self, session: Option<&mut ClientSession>, item: &T) -> Result<(), Error> {
        let doc = self.write(item)?;
        self.collection
            .insert_one(doc)
            .optional(session, InsertOne::session)
            .await
            .map_err(error)?;
        Ok(())
    }

    /// Replaces the document with `item`'s id by `item`; returns whether
    /// there was one (nothing is inserted when there was not).
    ///
    /// # Errors
    /// Invalid input when `item` has no `id`; a conflict with a unique
    /// index; unavailable or internal when the server failed.
    pub async fn update(&self, item: &T) -> Result<bool, Error> {
        self.update_with(None, item).await
    }

    /// [`update`](Self::update) in a unit of work.
    ///
    /// # Errors
    /// As [`update`](Self::update).
    pub async fn update_in(&self, tx: &mut MongoSession, item: &T) -> Result<bool, Error> {
        self.update_with(Some(tx.session()), item).await
    }

    async fn update_with(
        &self,
        session: Option<&mut ClientSession>,
        item: &T,
    ) -> Result<bool, Error> {
        let doc = self.write(item)?;
        let Some(id) = doc.get("_id").cloned() else {
            return Err(Error::invalid_input(
                "db.no_id",
                format!("a {} without an `id` cannot be updated", self.name()),
            ));
        };
        let done = self
            .collection
            .replace_one(doc! { "_id": id }, doc)
            .optional(session, ReplaceOne::session)
            .await
            .map_err(error)?;
        Ok(done.matched_count > 0)
    }

    /// Deletes the document with `_id` = `id`; returns whether there was one.
    ///
    /// # Errors
    /// The server failed.
    pub async fn delete(&self, id: impl Serialize) -> Result<bool, Error> {
        self.delete_with(None, id).await
    }

    /// [`delete`](Self::delete) in a unit of work.
    ///
    /// # Errors
    /// As [`delete`](Self::delete).
    pub async fn delete_in(
        &self,
        tx: &mut MongoSession,
        id: impl Serialize,
    ) -> Result<bool, Error> {
        self.delete_with(Some(tx.session()), id).await
    }

    async fn delete_with(
        &self,
        session: Option<&mut ClientSession>,
        id: impl Serialize,
    ) -> Result<bool, Error> {
        let filter = doc! { "_id": self.id(id)? };
        let done = self
            .collection
            .delete_one(filter)
            .optional(session, Delete::session)
            .await
            .map_err(error)?;
        Ok(done.deleted_count > 0)
    }

    fn id(&self, id: impl Serialize) -> Result<Bson, Error> {
        bson::to_bson(&id).map_err(|e| {
            Error::invalid_input(
                "db.bad_id",
                format!("an id of {} cannot be encoded", self.name()),
            )
            .with_source(e)
        })
    }

    fn write(&self, item: &T) -> Result<Document, Error> {
        bson::to_document(item).map(to_stored).map_err(|e| {
            Error::internal(format!(
                "a {} cannot be encoded as a document",
                std::any::type_name::<T>()
            ))
            .with_source(e)
        })
    }

    fn read(&self, doc: Document) -> Result<T, Error> {
        bson::from_document(from_stored(doc)).map_err(|e| {
            Error::internal(format!(
                "a document of `{}` does not read as a {}",
                self.name(),
                std::any::type_name::<T>()
            ))
            .with_source(e)
        })
    }

    async fn collect(&self, mut cursor: mongodb::Cursor<Document>) -> Result<Vec<T>, Error> {
        let mut items = Vec::new();
        while cursor.advance().await.map_err(error)? {
            let doc = cursor.deserialize_current().map_err(error)?;
            items.push(self.read(doc)?);
        }
        Ok(items)
    }
}

/// One page of [`Repository::browse`]. Serializes as Convey's paged
/// results do, in camelCase: `items`, `page`, `pageSize`, `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The documents of this page.
    pub items: Vec<T>,
    /// The page number, from 1.
    pub page: u64,
    /// The page size used.
    pub page_size: u64,
    /// How many documents match, on all pages.
    pub total: u64,
}

impl<T> Page<T> {
    /// How many pages there are (`0` when nothing matches).
    #[must_use]
    pub fn total_pages(&self) -> u64 {
        self.total.div_ceil(self.page_size.max(1))
    }
}

/// The order of [`Repository::browse`]: fields, each ascending or
/// descending, by their stored names (`id` means `_id`).
///
/// ```
/// use mamey_persistence::mongo::Sort;
///
/// let newest_first = Sort::desc("createdAt").then_asc("customerId");
/// # let _ = newest_first;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sort(Document);

impl Sort {
    /// By `field`, ascending.
    #[must_use]
    pub fn asc(field: &str) -> Self {
        Self::default().then_asc(field)
    }

    /// By `field`, descending.
    #[must_use]
    pub fn desc(field: &str) -> Self {
        Self::default().then_desc(field)
    }

    /// Then by `field`, ascending.
    #[must_use]
    pub fn then_asc(mut self, field: &str) -> Self {
        self.0.insert(stored_key(field), 1);
        self
    }

    /// Then by `field`, descending.
    #[must_use]
    pub fn then_desc(mut self, field: &str) -> Self {
        self.0.insert(stored_key(field), -1);
        self
    }

    /// The sort document, with `_id` last as the tie-breaker unless sorted
    /// on already.
    fn document(&self) -> Document {
        let mut sort = self.0.clone();
        if !sort.contains_key("_id") {
            sort.insert("_id", 1);
        }
        sort
    }
}

/// Page, page size, and the skip and limit they make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Paging {
    page: u64,
    page_size: u64,
    skip: u64,
    limit: i64,
}

impl Paging {
    fn new(page: u64, page_size: u64) -> Self {
        let page = page.max(1);
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The server takes a skip up to i64::MAX; beyond it, the page is
        // empty either way.
        let skip = (page - 1).saturating_mul(page_size).min(i64::MAX as u64);
        Self {
            page,
            page_size,
            skip,
            limit: i64::try_from(page_size).unwrap_or(i64::MAX),
        }
    }
}

/// The collection of a type: its name without the module path and generic
/// arguments, without a `Document` suffix, in camelCase (a leading acronym
/// all lower-case: `HTTPLog` → `httpLog`), in the plural.
fn collection_name(type_name: &str) -> String {
    let base = type_name.split('<').next().unwrap_or(type_name);
    let name = base.rsplit("::").next().unwrap_or(base);
    let name = match name.strip_suffix("Document") {
        Some(stem) if !stem.is_empty() => stem,
        _ => name,
    };
    plural(&camel_case(name))
}

fn camel_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let upper = chars.iter().take_while(|c| c.is_uppercase()).count();
    // In `HTTPLog` the `L` starts the next word; in `URL` or `Order`, every
    // leading capital is lowered.
    let lowered = if upper > 1 && upper < chars.len() {
        upper - 1
    } else {
        upper.max(1)
    };
    chars
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = if i < lowered {
                c.to_lowercase().collect::<Vec<_>>()
            } else {
                vec![*c]
            };
            lower.into_iter()
        })
        .collect()
}

/// English plural of a type name's last word, by the common rules; use
/// [`Repository::named`] for the irregular ones.
fn plural(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        format!("{word}es")
    } else if let Some(stem) = word.strip_suffix('y')
        && !stem.is_empty()
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U'])
    {
        format!("{stem}ies")
    } else {
        format!("{word}s")
    }
}

fn stored_key(field: &str) -> &str {
    if field == ID { "_id" } else { field }
}

/// A document as a type wrote it, with its `id` moved to `_id` (first, as
/// MongoDB keeps it).
fn to_stored(mut doc: Document) -> Document {
    match doc.remove(ID) {
        Some(id) => {
            let mut stored = doc! { "_id": id };
            stored.extend(doc);
            stored
        }
        None => doc,
    }
}

/// A stored document with its `_id` copied to `id`: a type reads whichever
/// it names, and ignores the other.
fn from_stored(mut doc: Document) -> Document {
    if let Some(id) = doc.get("_id").cloned()
        && !doc.contains_key(ID)
    {
        doc.insert(ID, id);
    }
    doc
}

/// A filter with a top-level `id` meaning `_id`.
fn stored_filter(filter: Document) -> Document {
    if filter.contains_key(ID) {
        filter
            .into_iter()
            .map(|(key, value)| (stored_key(&key).to_owned(), value))
            .collect()
    } else {
        filter
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OrderLine {
        id: String,
        order_id: u32,
        unit_price: i64,
        gift_note: Option<String>,
    }

    #[test]
    fn collections_are_named_after_types() {
        assert_eq!(collection_name("orders::domain::Order"), "orders");
        assert_eq!(collection_name("OrderLine"), "orderLines");
        assert_eq!(collection_name("app::OrderDocument"), "orders");
        assert_eq!(collection_name("Document"), "documents");
        assert_eq!(collection_name("Category"), "categories");
        assert_eq!(collection_name("Day"), "days");
        assert_eq!(collection_name("Address"), "addresses");
        assert_eq!(collection_name("Box"), "boxes");
        assert_eq!(collection_name("Batch"), "batches");
        assert_eq!(collection_name("HTTPLog"), "httpLogs");
        assert_eq!(collection_name("URL"), "urls");
        assert_eq!(collection_name("app::Wrapper<app::Order>"), "wrappers");
        assert_eq!(
            collection_name(std::any::type_name::<OrderLine>()),
            "orderLines"
        );
    }

    #[test]
    fn documents_are_camel_case_with_the_id_as_underscore_id() {
        let line = OrderLine {
            id: "l-1".into(),
            order_id: 7,
            unit_price: 250,
            gift_note: None,
        };
        let stored = to_stored(bson::to_document(&line).unwrap());
        assert_eq!(
            stored,
            doc! { "_id": "l-1", "orderId": 7_i64, "unitPrice": 250_i64, "giftNote": Bson::Null }
        );
        let read: OrderLine = bson::from_document(from_stored(stored)).unwrap();
        assert_eq!(read, line);
    }

    #[test]
    fn unknown_and_missing_optional_fields_are_fine() {
        let stored = doc! {
            "_id": "l-2", "orderId": 8, "unitPrice": 100_i64,
            "addedByANewerVersion": { "x": 1 },
        };
        let read: OrderLine = bson::from_document(from_stored(stored)).unwrap();
        assert_eq!(read.id, "l-2");
        assert_eq!(read.gift_note, None);
    }

    #[test]
    fn a_type_naming_underscore_id_itself_reads_too() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Legacy {
            #[serde(rename = "_id")]
            key: i64,
            name: String,
        }
        let legacy = Legacy {
            key: 5,
            name: "x".into(),
        };
        let stored = to_stored(bson::to_document(&legacy).unwrap());
        assert_eq!(stored, doc! { "_id": 5_i64, "name": "x" });
        assert_eq!(
            bson::from_document::<Legacy>(from_stored(stored)).unwrap(),
            legacy
        );
    }

    #[test]
    fn filters_and_sorts_use_stored_names() {
        assert_eq!(
            stored_filter(doc! { "id": { "$in": ["a", "b"] }, "orderId": 7 }),
            doc! { "_id": { "$in": ["a", "b"] }, "orderId": 7 }
        );
        // Only the top level: a nested `id` is a field of a sub-document.
        assert_eq!(
            stored_filter(doc! { "customer.id": 1 }),
            doc! { "customer.id": 1 }
        );
        assert_eq!(Sort::default().document(), doc! { "_id": 1 });
        assert_eq!(
            Sort::desc("createdAt").then_asc("name").document(),
            doc! { "createdAt": -1, "name": 1, "_id": 1 }
        );
        assert_eq!(Sort::desc("id").document(), doc! { "_id": -1 });
    }

    #[test]
    fn paging_turns_pages_into_skip_and_limit() {
        let p = Paging::new(1, 20);
        assert_eq!((p.page, p.page_size, p.skip, p.limit), (1, 20, 0, 20));
        let p = Paging::new(3, 20);
        assert_eq!((p.skip, p.limit), (40, 20));
        // Page 0 is page 1; size 0 the default; sizes are capped.
        let p = Paging::new(0, 0);
        assert_eq!(
            (p.page, p.page_size, p.skip, p.limit),
            (1, DEFAULT_PAGE_SIZE, 0, 10)
        );
        let p = Paging::new(2, 1_000_000);
        assert_eq!(
            (p.page_size, p.skip, p.limit),
            (MAX_PAGE_SIZE, MAX_PAGE_SIZE, 1000)
        );
        // No overflow on absurd pages.
        assert_eq!(Paging::new(u64::MAX, 1000).skip, i64::MAX as u64);
    }

    #[test]
    fn pages_count_their_pages_and_serialize_in_camel_case() {
        let page = Page {
            items: vec![1, 2],
            page: 2,
            page_size: 2,
            total: 5,
        };
        assert_eq!(page.total_pages(), 3);
        assert_eq!(
            Page::<u8> {
                items: vec![],
                page: 1,
                page_size: 10,
                total: 0
            }
            .total_pages(),
            0
        );
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            serde_json::json!({ "items": [1, 2], "page": 2, "pageSize": 2, "total": 5 })
        );
    }
}
